// Safetensors header validation and the dtype table. Kept free of libtorch
// calls so the libFuzzer target (fuzz/fuzz_safetensors_header.cpp) links
// this file alone.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"

namespace moefy {

namespace {

struct DTypeRow {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeRow& row(DType d) {
  for (const auto& r : kDTypes)
    if (r.dtype == d) return r;
  throw Error("internal: unknown dtype");
}

// Header length sanity cap: real headers are far below this (100 MB).
constexpr uint64_t kMaxHeader = 100ull << 20;

}  // namespace

DType dtypeFromName(const std::string& name, const std::string& context) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.dtype;
  throw FormatError(context + ": unsupported dtype '" + name + "'");
}
const char* dtypeName(DType d) { return row(d).name; }
size_t dtypeSize(DType d) { return row(d).size; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

void parseSafetensorsHeader(const uint8_t* data, uint64_t size, const std::string& file,
                            std::vector<TensorInfo>& tensors,
                            std::map<std::string, std::string>& metadata, uint64_t& dataStart) {
  tensors.clear();
  metadata.clear();
  if (size < 8) throw FormatError(file + ": truncated file (" + std::to_string(size) + " bytes, no header)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader) throw FormatError(file + ": header length " + std::to_string(n) + " is implausibly large");
  if (n > size - 8)
    throw FormatError(file + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                      std::to_string(size) + " bytes)");
  dataStart = 8 + n;
  const uint64_t dataSize = size - dataStart;
  // parseJson refuses a tensor named twice (nlohmann would keep the last
  // entry) and nesting past kMaxJsonDepth.
  const nlohmann::json header =
      parseJson(std::string_view(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n)), file + ": header");
  if (!header.is_object()) throw FormatError(file + ": header is not a JSON object");
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw FormatError(file + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw FormatError(file + ": __metadata__ value '" + m.key() + "' is not a string");
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string ctx = file + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw FormatError(ctx + " lacks dtype, shape or data_offsets");
    if (!v["dtype"].is_string()) throw FormatError(ctx + ": dtype is not a string");
    TensorInfo info;
    info.name = name;
    info.dtype = dtypeFromName(v["dtype"].get<std::string>(), ctx);
    const auto& shape = v["shape"];
    if (!shape.is_array()) throw FormatError(ctx + ": shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) throw FormatError(ctx + ": shape has a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim && numel > (1ull << 50) / dim)) throw FormatError(ctx + ": shape is implausibly large");
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw FormatError(ctx + ": data_offsets must be two non-negative integers");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.end < info.begin) throw FormatError(ctx + ": data_offsets end before they begin");
    if (info.end > dataSize)
      throw FormatError(ctx + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                        "] lie outside the data region (" + std::to_string(dataSize) + " bytes)");
    if (info.end - info.begin != numel * dtypeSize(info.dtype))
      throw FormatError(ctx + ": " + std::to_string(info.end - info.begin) + " bytes of data for shape " +
                        shapeString(info.shape) + " " + dtypeName(info.dtype) + " (expected " +
                        std::to_string(numel * dtypeSize(info.dtype)) + ")");
    tensors.push_back(std::move(info));
  }
  // The data region must be covered exactly: sorted by offsets, each tensor
  // starts where the previous one ended and the last ends at the end of the
  // file. This refuses overlaps (two tensors sharing bytes) and unreferenced
  // gaps or trailing bytes, as the reference reader (safetensors'
  // Metadata::validate) does; empty tensors sit at the running offset.
  std::vector<const TensorInfo*> sorted;
  sorted.reserve(tensors.size());
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : sorted) {
    if (t->begin < covered)
      throw FormatError(file + ": tensor '" + t->name + "' overlaps tensor '" + (previous ? previous->name : "") + "'");
    if (t->begin > covered)
      throw FormatError(file + ": " + std::to_string(t->begin - covered) +
                        " unreferenced bytes in the data region at [" + std::to_string(covered) + ", " +
                        std::to_string(t->begin) + ") before tensor '" + t->name + "'");
    covered = t->end;
    previous = t;
  }
  if (covered != dataSize)
    throw FormatError(file + ": " + std::to_string(dataSize - covered) +
                      " unreferenced bytes at the end of the data region (tensors end at " + std::to_string(covered) +
                      " of " + std::to_string(dataSize) + ")");
}


}  // namespace moefy
