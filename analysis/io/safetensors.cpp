#include "analysis/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <torch/torch.h>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"

namespace moefy {

namespace {

struct DTypeRow {
  DType dtype;
  const char* name;
  size_t size;
  at::ScalarType scalar;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8, at::kDouble},  {DType::F32, "F32", 4, at::kFloat},
    {DType::F16, "F16", 2, at::kHalf},    {DType::BF16, "BF16", 2, at::kBFloat16},
    {DType::I64, "I64", 8, at::kLong},    {DType::I32, "I32", 4, at::kInt},
    {DType::I16, "I16", 2, at::kShort},   {DType::I8, "I8", 1, at::kChar},
    {DType::U8, "U8", 1, at::kByte},      {DType::BOOL, "BOOL", 1, at::kBool},
};

const DTypeRow& row(DType d) {
  for (const auto& r : kDTypes)
    if (r.dtype == d) return r;
  throw Error("internal: unknown dtype");
}

DType dtypeFromScalar(at::ScalarType s, const std::string& context) {
  for (const auto& r : kDTypes)
    if (r.scalar == s) return r.dtype;
  throw FormatError(context + ": unsupported tensor dtype " + std::string(c10::toString(s)));
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
std::string shapeString(const at::Tensor& t) { return shapeString(t.sizes().vec()); }

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
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(data + 8),
                                   reinterpret_cast<const char*>(data + 8 + n));
  } catch (const std::exception& e) {
    throw FormatError(file + ": header is not valid JSON");
  }
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
  // Overlap check on the sorted byte ranges (empty tensors never overlap).
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : tensors)
    if (t.end > t.begin) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->begin < sorted[i - 1]->end)
      throw FormatError(file + ": tensor '" + sorted[i]->name + "' overlaps tensor '" + sorted[i - 1]->name + "'");
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(file + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(file + ": not a regular file");
  }
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fileSize_ = static_cast<uint64_t>(st.st_size);
  if (f->fileSize_ > 0) {
    void* p = mmap(nullptr, f->fileSize_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw IoError(file + ": cannot memory-map (" + std::strerror(errno) + ")");
    }
    uint64_t len = f->fileSize_;
    f->mapping_ = std::shared_ptr<void>(p, [len](void* q) { munmap(q, len); });
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  static const uint8_t empty[1] = {0};
  parseSafetensorsHeader(f->base_ ? f->base_ : empty, f->fileSize_, path.filename().string(), f->tensors_,
                         f->metadata_, f->dataStart_);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::require(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw FormatError(path_.filename().string() + ": missing tensor '" + name + "'");
  return *t;
}

at::Tensor SafetensorsFile::raw(const std::string& name) const {
  const TensorInfo& t = require(name);
  const auto scalar = row(t.dtype).scalar;
  auto opts = at::TensorOptions().dtype(scalar);
  if (t.numel() == 0) return at::empty(t.shape, opts);
  const uint8_t* p = base_ + dataStart_ + t.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtypeSize(t.dtype) == 0) {
    auto keep = mapping_;
    // The mapping is read-only (MAP_PRIVATE, PROT_READ): callers must not write
    // into a raw() view; f32() and the model loader copy or convert.
    return at::from_blob(const_cast<uint8_t*>(p), t.shape, [keep](void*) {}, opts);
  }
  at::Tensor out = at::empty(t.shape, opts);
  std::memcpy(out.data_ptr(), p, t.end - t.begin);
  return out;
}

at::Tensor SafetensorsFile::f32(const std::string& name) const {
  at::Tensor r = raw(name);
  if (r.scalar_type() == at::kFloat) return r.clone();
  return r.to(at::kFloat);
}

void writeSafetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string file = path.filename().string();
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contig;
  contig.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t0] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      throw Error(file + ": duplicate or reserved tensor name '" + name + "'");
    at::Tensor t = t0.detach().to(at::kCPU).contiguous();
    DType d = dtypeFromScalar(t.scalar_type(), file + ": tensor '" + name + "'");
    uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtypeSize(d);
    header[name] = {{"dtype", dtypeName(d)}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contig.push_back(t);
  }
  std::string hs = header.dump();
  // Pad with spaces so the data region starts 8-byte aligned (as HF does).
  while ((8 + hs.size()) % 8) hs.push_back(' ');
  uint64_t n = hs.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  writeFileAtomic(path, [&](std::FILE* f) {
    writeAll(f, len, 8, path.string());
    writeAll(f, hs.data(), hs.size(), path.string());
    for (const auto& t : contig)
      writeAll(f, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), path.string());
  });
}

}  // namespace moefy
