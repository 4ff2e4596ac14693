#include "analysis/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/input_file.h"

namespace moefy {

namespace {

constexpr std::pair<DType, at::ScalarType> kScalars[] = {
    {DType::F64, at::kDouble}, {DType::F32, at::kFloat}, {DType::F16, at::kHalf}, {DType::BF16, at::kBFloat16},
    {DType::I64, at::kLong},   {DType::I32, at::kInt},   {DType::I16, at::kShort}, {DType::I8, at::kChar},
    {DType::U8, at::kByte},    {DType::BOOL, at::kBool},
};

at::ScalarType scalarOf(DType d) {
  for (const auto& [dt, s] : kScalars)
    if (dt == d) return s;
  throw Error("internal: unknown dtype");
}

DType dtypeFromScalar(at::ScalarType s, const std::string& context) {
  for (const auto& [dt, sc] : kScalars)
    if (sc == s) return dt;
  throw FormatError(context + ": unsupported tensor dtype " + std::string(c10::toString(s)));
}

}  // namespace

std::string shapeString(const at::Tensor& t) { return shapeString(t.sizes().vec()); }

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file = path.string();
  // Checks the type before reading and never blocks (a FIFO is refused).
  uint64_t size = 0;
  int fd = openInputFile(path, &size);
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fileSize_ = size;
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
  const auto scalar = scalarOf(t.dtype);
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

void requireFinite(const at::Tensor& t0, const std::string& file, const std::string& name) {
  if (!at::isFloatingType(t0.scalar_type()) || t0.numel() == 0) return;
  at::Tensor t = t0.scalar_type() == at::kFloat ? t0.contiguous() : t0.to(at::kFloat).contiguous();
  // IEEE-754: a float is NaN or Inf exactly when its 8 exponent bits are all
  // ones. The integer test vectorises (std::isfinite does not at -O2), and
  // each chunk only records whether it saw one, so the common case is a
  // branch-free streaming read.
  const auto* bits = static_cast<const uint32_t*>(t.data_ptr());
  const int64_t n = t.numel();
  std::atomic<int64_t> first{n};
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    uint32_t bad = 0;
    for (int64_t i = begin; i < end; ++i) bad |= static_cast<uint32_t>((bits[i] & 0x7f800000u) == 0x7f800000u);
    if (!bad) return;
    for (int64_t i = begin; i < end; ++i)
      if ((bits[i] & 0x7f800000u) == 0x7f800000u) {
        int64_t cur = first.load();
        while (i < cur && !first.compare_exchange_weak(cur, i)) {
        }
        break;
      }
  });
  if (first.load() == n) return;
  int64_t count = 0;
  for (int64_t i = first.load(); i < n; ++i) count += (bits[i] & 0x7f800000u) == 0x7f800000u;
  throw FormatError(file + ": tensor '" + name + "' has " + std::to_string(count) + " NaN/Inf value" +
                    (count == 1 ? "" : "s") + " (the first at flat index " + std::to_string(first.load()) + ")");
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
