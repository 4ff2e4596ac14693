#include "analysis/text/line_reader.h"

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"
#include "analysis/text/utf8.h"

namespace moefy {

void checkTextLine(const std::string& line, const std::filesystem::path& file, int64_t lineNo) {
  size_t nul = line.find('\0');
  if (nul != std::string::npos)
    throw FormatError(file.string() + ":" + std::to_string(lineNo) + ": binary file (NUL byte at column " +
                      std::to_string(nul + 1) + ")");
  size_t ok = utf8::validPrefix(line);
  if (ok != line.size())
    throw FormatError(file.string() + ":" + std::to_string(lineNo) + ": invalid UTF-8 at column " +
                      std::to_string(ok + 1));
}

std::vector<std::string> readTextLines(const std::filesystem::path& p) {
  LineReader reader(p);
  std::vector<std::string> lines;
  std::string line;
  while (reader.next(line)) {
    checkTextLine(line, p, reader.lineNo());
    lines.push_back(std::move(line));
  }
  return lines;
}

bool isBlankLine(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }

LineReader::LineReader(const std::filesystem::path& p) : path_(p) {
  // Checked (without blocking) before std::ifstream opens it: a FIFO would block forever.
  requireInputFile(p);
  in_.open(p, std::ios::binary);
  if (!in_) throw IoError(p.string() + ": cannot open");
}

bool LineReader::next(std::string& line) {
  lineStart_ = pos_;
  if (!std::getline(in_, line)) {
    if (in_.bad()) throw IoError(path_.string() + ": read error");
    return false;
  }
  pos_ += static_cast<int64_t>(line.size()) + (in_.eof() ? 0 : 1);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (lineStart_ == 0 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // UTF-8 byte order mark
  ++lineNo_;
  return true;
}

void LineReader::seek(int64_t offset, int64_t lineNo) {
  in_.clear();
  in_.seekg(offset);
  pos_ = offset;
  lineNo_ = lineNo;
}

}  // namespace moefy
