#pragma once
// SentencePiece's precompiled normalization charsmap: a Darts-clone
// double-array trie over UTF-8 keys whose values index '\0'-terminated
// replacement strings. Blob layout: u32 trie size in bytes, the trie units,
// then the replacement strings.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moefy {

class Charsmap {
 public:
  /// Parses a blob; throws FormatError naming `where` if it is malformed.
  void load(const std::string& blob, const std::string& where);
  bool empty() const { return units_.empty(); }
  /// The longest key that is a prefix of `s`: (its length, its replacement);
  /// (0, "") if none.
  std::pair<size_t, std::string_view> longest(std::string_view s) const;

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
};

}  // namespace moefy
