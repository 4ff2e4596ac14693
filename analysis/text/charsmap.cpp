#include "analysis/text/charsmap.h"

#include <cstring>

#include "analysis/common/error.h"

namespace moefy {

void Charsmap::load(const std::string& blob, const std::string& where) {
  units_.clear();
  replacements_.clear();
  if (blob.empty()) return;
  if (blob.size() < 4) throw FormatError(where + ": precompiled charsmap is too short");
  uint32_t trieSize;
  std::memcpy(&trieSize, blob.data(), 4);
  if (trieSize % 4 != 0 || 4 + static_cast<size_t>(trieSize) > blob.size())
    throw FormatError(where + ": precompiled charsmap has a bad trie size (" + std::to_string(trieSize) + ")");
  units_.resize(trieSize / 4);
  std::memcpy(units_.data(), blob.data() + 4, trieSize);
  replacements_ = blob.substr(4 + trieSize);
}

std::pair<size_t, std::string_view> Charsmap::longest(std::string_view key) const {
  // Darts-clone unit layout: offset in bits 10.. (shifted by 8 if bit 9),
  // label in bits 0..7 plus bit 31, has-leaf flag in bit 8, value in 0..30.
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFFu); };
  auto hasLeaf = [](uint32_t u) { return ((u >> 8) & 1u) == 1u; };
  auto value = [](uint32_t u) { return u & ((1u << 31) - 1); };
  size_t bestLen = 0, bestIdx = 0;
  if (units_.empty()) return {0, {}};
  size_t node = 0;
  node ^= offset(units_[0]);
  for (size_t i = 0; i < key.size(); ++i) {
    auto c = static_cast<unsigned char>(key[i]);
    if (c == 0) break;
    node ^= c;
    if (node >= units_.size()) break;
    uint32_t unit = units_[node];
    if (label(unit) != c) break;
    node ^= offset(unit);
    if (hasLeaf(unit)) {
      if (node >= units_.size()) break;
      bestLen = i + 1;
      bestIdx = value(units_[node]);
    }
  }
  if (bestLen == 0 || bestIdx >= replacements_.size()) return {0, {}};
  size_t end = replacements_.find('\0', bestIdx);
  if (end == std::string::npos) end = replacements_.size();
  return {bestLen, std::string_view(replacements_).substr(bestIdx, end - bestIdx)};
}

}  // namespace moefy
