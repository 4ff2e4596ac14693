#include "analysis/text/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "analysis/common/error.h"
#include "analysis/text/utf8.h"

namespace moefy {

namespace {

void initOnig() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
  });
}

struct RegionHolder {
  OnigRegion* region = onig_region_new();
  ~RegionHolder() { onig_region_free(region, 1); }
};

}  // namespace

OnigPattern::OnigPattern(const std::string& pattern, const std::string& what) : source_(pattern) {
  initOnig();
  OnigRegex reg = nullptr;
  OnigErrorInfo einfo;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  int r = onig_new(&reg, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &einfo);
  if (r != ONIG_NORMAL) {
    OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(buf, r, &einfo);
    throw FormatError(what + ": invalid regex '" + pattern + "': " + reinterpret_cast<char*>(buf));
  }
  regex_ = reg;
}

OnigPattern::~OnigPattern() {
  if (regex_) onig_free(static_cast<OnigRegex>(regex_));
}

void OnigPattern::findAll(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
  out.clear();
  thread_local RegionHolder holder;
  OnigRegion* region = holder.region;
  auto reg = static_cast<OnigRegex>(regex_);
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = str + text.size();
  size_t pos = 0;
  bool haveLast = false;
  size_t lastEnd = 0;
  while (pos <= text.size()) {
    onig_region_clear(region);
    int r = onig_search(reg, str, end, str + pos, end, region, ONIG_OPTION_NONE);
    if (r < 0) break;  // ONIG_MISMATCH (or an error: treat as no more matches)
    size_t s = static_cast<size_t>(region->beg[0]), e = static_cast<size_t>(region->end[0]);
    if (s == e && haveLast && lastEnd == e) {
      // Skip an empty match right after the previous match: advance one char.
      if (pos >= text.size()) break;
      pos += utf8::seqLen(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.emplace_back(static_cast<uint32_t>(s), static_cast<uint32_t>(e));
    haveLast = true;
    lastEnd = e;
    if (e == pos && s == e) {
      // Empty match at pos: the next search starts at pos again, and the rule
      // above then skips forward.
    }
    pos = e;
  }
}

std::string OnigPattern::escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ \t\n\r\f\v").find(c) != std::string_view::npos) {
      switch (c) {
        case '\t': out += "\\t"; continue;
        case '\n': out += "\\n"; continue;
        case '\r': out += "\\r"; continue;
        case '\f': out += "\\f"; continue;
        case '\v': out += "\\v"; continue;
        case ' ': out += ' '; continue;
        default: break;
      }
      out += '\\';
    }
    out += c;
  }
  return out;
}

}  // namespace moefy
