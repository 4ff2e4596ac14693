#pragma once
// Safetensors reader (memory-mapped, validated) and atomic writer.
//
// File layout: u64 little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the data region. Offsets are
// relative to the start of the data region.
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moefy {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

/// "F32" etc. Throws FormatError for names outside the allow-list.
DType dtypeFromName(const std::string& name, const std::string& context);
const char* dtypeName(DType dtype);
size_t dtypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offset in the data region
  uint64_t end = 0;
  int64_t numel() const;
};

/// Formats a shape as "[4096, 11008]".
std::string shapeString(const std::vector<int64_t>& shape);
std::string shapeString(const at::Tensor& t);

/// A memory-mapped safetensors file. Opening validates the whole header:
/// header length against file size, JSON syntax, dtype allow-list, offsets
/// inside the data region, sizes matching shape x dtype, and no overlaps.
/// Thread-safety: const methods may be called concurrently.
class SafetensorsFile {
 public:
  /// Opens and validates `path`. Throws FormatError/IoError naming the file.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// nullptr if absent.
  const TensorInfo* find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  /// The tensor in its stored dtype. Zero-copy view into the mapping when the
  /// data is aligned (the view keeps the mapping alive); a copy otherwise.
  at::Tensor raw(const std::string& name) const;
  /// The tensor converted to float32 (a copy unless already F32).
  at::Tensor f32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;  // munmap on release
  const uint8_t* base_ = nullptr;
  uint64_t fileSize_ = 0;
  uint64_t dataStart_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  const TensorInfo& require(const std::string& name) const;
};

/// Validates a header given as raw bytes (the first 8 + N bytes and the file
/// size). Used by the reader and by the fuzz target. Throws FormatError.
void parseSafetensorsHeader(const uint8_t* data, uint64_t size, const std::string& fileName,
                            std::vector<TensorInfo>& tensors,
                            std::map<std::string, std::string>& metadata, uint64_t& dataStart);

/// Throws FormatError "FILE: tensor 'NAME' has 3 NaN/Inf values (the first at
/// flat index 12345)" unless every value of `t` is finite. Integer and bool
/// tensors always pass. One pass over the data, parallel over the ATen thread
/// pool, no temporary tensor: for F32 it costs about one read of the bytes
/// (measured in the note of issue 12), less than the F16->F32 conversion done
/// at load. Used by every reader of weights (model, MoE experts, routers,
/// training checkpoints) once, at load. Thread-safe.
void requireFinite(const at::Tensor& t, const std::string& file, const std::string& name);

/// Writes tensors (any supported dtype; made contiguous on CPU) atomically.
/// Names must be unique. Metadata goes to "__metadata__".
void writeSafetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace moefy
