#pragma once
// Oniguruma regexes, compiled and searched as the Hugging Face tokenizers
// library does (onig crate: UTF-8, default syntax, no options).
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moefy {

class OnigPattern {
 public:
  /// Compiles `pattern`; throws FormatError naming `what` on a syntax error.
  OnigPattern(const std::string& pattern, const std::string& what);
  ~OnigPattern();
  OnigPattern(const OnigPattern&) = delete;
  OnigPattern& operator=(const OnigPattern&) = delete;

  /// Non-overlapping matches [start, end) in byte offsets of `text` (valid
  /// UTF-8), left to right, with the onig crate's find_iter rule for empty
  /// matches (an empty match right after the previous match is skipped).
  /// Thread-safe.
  void findAll(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const;

  const std::string& source() const { return source_; }

  /// Escapes regex metacharacters so that `s` matches literally.
  static std::string escape(std::string_view s);

 private:
  void* regex_ = nullptr;  // OnigRegex
  std::string source_;
};

}  // namespace moefy
