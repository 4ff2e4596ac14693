#include "analysis/io/json_input.h"

#include <cmath>
#include <limits>
#include <unordered_set>

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"

namespace moefy {

std::string inputExcerpt(std::string_view s, size_t max) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return s.size() > max ? out + "..." : out;
}

nlohmann::json parseJson(std::string_view text, const std::string& where) {
  // keys[d] holds the keys seen so far in the object open at depth d. The
  // parser callback runs before a value is added, so both limits act while
  // parsing: nothing deep is ever built.
  std::vector<std::unordered_set<std::string>> keys;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) -> bool {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        if (depth >= kMaxJsonDepth)
          throw FormatError(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        if (event == E::object_start) {
          if (keys.size() <= static_cast<size_t>(depth)) keys.resize(static_cast<size_t>(depth) + 1);
          keys[static_cast<size_t>(depth)].clear();
        }
        break;
      case E::key: {
        // depth counts the open containers, the current object included.
        auto& seen = keys.at(static_cast<size_t>(depth - 1));
        const auto& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second)
          throw FormatError(where + ": key '" + inputExcerpt(k) + "' appears twice in one object");
        break;
      }
      case E::object_end:
        if (static_cast<size_t>(depth) < keys.size())
          std::unordered_set<std::string>().swap(keys[static_cast<size_t>(depth)]);
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line 3, column 1: ..."
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    for (char& c : what)
      if (c == '\n' || c == '\r') c = ' ';
    if (what.size() > 200) what = what.substr(0, 197) + "...";
    throw FormatError(where + ": malformed JSON (" + what + ")");
  }
}

nlohmann::json readJsonFile(const std::filesystem::path& path) {
  return parseJson(readInputFile(path, 1ull << 31), path.string());
}

int64_t jsonInteger(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& what) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (hi < 0 || u > static_cast<uint64_t>(hi) || (lo > 0 && u < static_cast<uint64_t>(lo)))
      throw FormatError(what + " = " + std::to_string(u) + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi)
      throw FormatError(what + " = " + std::to_string(i) + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
    return i;
  }
  throw FormatError(what + " must be an integer (got " + std::string(v.type_name()) + ")");
}

int jsonInt(const nlohmann::json& v, int lo, int hi, const std::string& what) {
  return static_cast<int>(jsonInteger(v, lo, hi, what));
}

std::vector<int> jsonIntList(const nlohmann::json& v, int lo, int hi, const std::string& what) {
  if (!v.is_array()) throw FormatError(what + " must be a list of integers");
  std::vector<int> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) out.push_back(jsonInt(v[i], lo, hi, what + "[" + std::to_string(i) + "]"));
  return out;
}

double jsonFinite(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number()) throw FormatError(what + " must be a number (got " + std::string(v.type_name()) + ")");
  const double d = v.get<double>();
  if (!std::isfinite(d)) throw FormatError(what + " = " + std::to_string(d) + " is not finite");
  return d;
}

}  // namespace moefy
