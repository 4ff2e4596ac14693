#pragma once
// Minimal .npy (format 1.0, little-endian float32, 2-D) writer and reader for
// the numeric tests that hand tensors to a numpy reference script and read its
// answer back. Not a general .npy reader: the caller states the shape.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace moefy::test {

/// Writes x (F32, contiguous, [rows, cols]) as a .npy file.
inline void writeNpy(const std::filesystem::path& path, const at::Tensor& x) {
  std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(x.size(0)) + ", " +
                    std::to_string(x.size(1)) + "), }";
  while ((10 + hdr.size() + 1) % 64) hdr += ' ';
  hdr += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  uint16_t n = static_cast<uint16_t>(hdr.size());
  bytes += std::string(reinterpret_cast<char*>(&n), 2) + hdr;
  bytes.append(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
  std::ofstream(path, std::ios::binary) << bytes;
}

/// Reads a float32 .npy of shape [rows, cols]; an undefined tensor when the
/// file is missing, truncated or of another size.
inline at::Tensor readNpy(const std::filesystem::path& path, int64_t rows, int64_t cols) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  if (all.size() < 10) return {};
  uint16_t hl = static_cast<uint8_t>(all[8]) | (static_cast<uint8_t>(all[9]) << 8);
  if (all.size() != 10 + hl + static_cast<size_t>(rows * cols * 4)) return {};
  return at::from_blob(all.data() + 10 + hl, {rows, cols}, at::kFloat).clone();
}

}  // namespace moefy::test
