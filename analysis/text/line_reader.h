#pragma once
// Line-by-line reading of text inputs, shared by the corpus readers
// (corpus.cpp, parallel_corpus.cpp): byte offsets for seeking back to a line,
// '\r\n' and a leading UTF-8 byte order mark accepted, and the per-line
// validation (no NUL byte, valid UTF-8) with errors naming file and line.
// A LineReader is one open file: use one per thread.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace moefy {

/// Throws FormatError "FILE:LINE: binary file (NUL byte at column C)" or
/// "FILE:LINE: invalid UTF-8 at column C".
void checkTextLine(const std::string& line, const std::filesystem::path& file, int64_t lineNo);

/// Whether the line holds only spaces, tabs, '\r', '\f' or '\v' (or nothing).
bool isBlankLine(const std::string& line);

/// Every line of a text file, one segment per line (e.g. hypotheses and
/// references of `moefy score`): '\r\n' and a leading byte order mark
/// accepted, blank lines kept (an empty segment is data), a final newline
/// optional. Throws IoError (missing, not a regular file, unreadable) and
/// FormatError from checkTextLine, both naming the file (and line).
std::vector<std::string> readTextLines(const std::filesystem::path& p);

/// Reads lines keeping track of byte offsets.
class LineReader {
 public:
  /// Opens `p` (refused without blocking when it is not a regular file, e.g. a
  /// FIFO). Throws IoError naming the path.
  explicit LineReader(const std::filesystem::path& p);
  /// Reads the next line without its '\n' (and a trailing '\r' removed); false at EOF.
  bool next(std::string& line);
  /// Continues at byte `offset`, the start of line `lineNo` + 1.
  void seek(int64_t offset, int64_t lineNo);
  /// Byte offset of the line last read.
  int64_t lineStart() const { return lineStart_; }
  /// 1-based number of the line last read.
  int64_t lineNo() const { return lineNo_; }

 private:
  std::filesystem::path path_;
  std::ifstream in_;
  int64_t pos_ = 0, lineStart_ = 0, lineNo_ = 0;
};

}  // namespace moefy
