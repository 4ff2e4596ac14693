#pragma once
// FNV-1a (64 bit) over bytes, and the 16-hex-digit form the artefacts store
// (model fingerprints, label hashes, the moefication block checksum).
#include <cstddef>
#include <cstdint>
#include <string>

namespace moefy {

inline constexpr uint64_t kFnvOffset = 1469598103934665603ull;

/// Continues an FNV-1a hash `h` over n bytes at p.
inline uint64_t fnv1a(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

/// h as 16 lower-case hex digits.
inline std::string hex16(uint64_t h) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[static_cast<size_t>(i)] = digits[h & 15];
  return s;
}

}  // namespace moefy
