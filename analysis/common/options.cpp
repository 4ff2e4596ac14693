#include "analysis/common/options.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "analysis/common/error.h"

namespace moefy {

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// Parses a whole string as a 64-bit integer. strtoll (not stoi) so that a
// value beyond int64 is reported as out of range instead of wrapping, and the
// range check happens before anything narrows it.
// The whole of `s` must be one number as `convert` (strtoll/strtod-like) reads it:
// no leading space, nothing left over. errno is cleared first so the caller can
// test it for ERANGE.
template <class Convert>
auto parseWhole(const OptionSpec& o, const std::string& s, const char* what, Convert convert) {
  const std::string bad = "--" + o.name + ": expected " + what + ", got '" + s + "'";
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) throw ParameterError(bad);
  errno = 0;
  char* end = nullptr;
  const auto v = convert(s.c_str(), &end);
  if (end != s.c_str() + s.size()) throw ParameterError(bad);
  return v;
}

int64_t parseInt64(const OptionSpec& o, const std::string& s) {
  const long long v =
      parseWhole(o, s, "an integer", [](const char* p, char** end) { return std::strtoll(p, end, 10); });
  if (errno == ERANGE) throw ParameterError("--" + o.name + ": " + s + " is outside " + o.rangeText());
  if (v < o.intMin || v > o.intMax) throw ParameterError("--" + o.name + ": " + s + " is outside " + o.rangeText());
  return v;
}

double parseReal(const OptionSpec& o, const std::string& s) {
  const double v = parseWhole(o, s, "a number", [](const char* p, char** end) { return std::strtod(p, end); });
  if (!std::isfinite(v)) throw ParameterError("--" + o.name + ": must be a finite number, got '" + s + "'");
  const bool below = o.minOpen ? !(v > o.realMin) : !(v >= o.realMin);
  if (below || !(v <= o.realMax)) throw ParameterError("--" + o.name + ": " + s + " is outside " + o.rangeText());
  return v;
}

void validate(const OptionSpec& o, const std::string& value) {
  switch (o.type) {
    case OptionType::Int:
      parseInt64(o, value);
      break;
    case OptionType::Real:
      parseReal(o, value);
      break;
    case OptionType::Choice:
      if (std::find(o.choices.begin(), o.choices.end(), value) == o.choices.end()) {
        std::string msg = "--" + o.name + ": expected " + join(o.choices, ", ") + "; got '" + value + "'";
        std::string near = closestName(value, o.choices);
        if (!near.empty()) msg += " (did you mean " + near + "?)";
        throw ParameterError(msg);
      }
      break;
    case OptionType::Flag:
    case OptionType::Text:
      break;
  }
}

const char* typeName(OptionType t) {
  switch (t) {
    case OptionType::Flag:
      return "flag";
    case OptionType::Int:
      return "int";
    case OptionType::Real:
      return "real";
    case OptionType::Text:
      return "text";
    case OptionType::Choice:
      return "choice";
  }
  return "?";
}

std::string intText(int64_t v) {
  // Limits print as words so that help stays readable.
  if (v == std::numeric_limits<int64_t>::max()) return "2^63-1";
  if (v > (int64_t{1} << 30) && (v & (v - 1)) == 0) {
    int k = 0;
    while ((int64_t{1} << k) != v) ++k;
    return "2^" + std::to_string(k);
  }
  return std::to_string(v);
}

}  // namespace

std::vector<std::string> splitListValue(const std::string& text, const std::string& option) {
  auto trim = [](const std::string& s) {
    const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::vector<std::string> out;
  if (trim(text).empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (item.empty())
      throw ParameterError(option + ": empty entry in '" + text + "' (a doubled, leading or trailing comma)");
    out.push_back(std::move(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string formatReal(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.10g", v);
  return b;
}

std::string OptionSpec::rangeText() const {
  if (type == OptionType::Int) return "[" + intText(intMin) + ", " + intText(intMax) + "]";
  if (type == OptionType::Real) {
    std::string hi = realMax == std::numeric_limits<double>::max() ? "inf)" : formatReal(realMax) + "]";
    return (minOpen ? "(" : "[") + formatReal(realMin) + ", " + hi;
  }
  return {};
}

// ---- OptionTable -------------------------------------------------------------

OptionTable::OptionTable(std::string command, std::string summary, std::string synopsis, std::string description)
    : command_(std::move(command)),
      summary_(std::move(summary)),
      synopsis_(std::move(synopsis)),
      description_(std::move(description)) {}

OptionSpec& OptionTable::add(OptionSpec spec) {
  if (find(spec.name) || spec.name == "help")
    throw std::logic_error("option table '" + command_ + "': --" + spec.name + " declared twice");
  options_.push_back(std::move(spec));
  return options_.back();
}

OptionTable& OptionTable::flag(const std::string& name, const std::string& help, const std::string& group) {
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Flag;
  s.help = help;
  s.group = group;
  s.defaultText = "false";
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::integer(const std::string& name, const std::string& metavar, int64_t def, int64_t min,
                                  int64_t max, const std::string& help, const std::string& group, bool sentinel) {
  if (!sentinel && (def < min || def > max))
    throw std::logic_error("option table '" + command_ + "': default of --" + name + " outside its range");
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Int;
  s.metavar = metavar;
  s.help = help;
  s.group = group;
  s.intMin = min;
  s.intMax = max;
  s.defaultText = std::to_string(def);
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::integerNoDefault(const std::string& name, const std::string& metavar, int64_t min,
                                           int64_t max, const std::string& help, const std::string& suggested,
                                           const std::string& group) {
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Int;
  s.metavar = metavar;
  s.help = help;
  s.group = group;
  s.intMin = min;
  s.intMax = max;
  s.suggested = suggested;
  if (!suggested.empty()) validate(s, suggested);
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::real(const std::string& name, const std::string& metavar, double def, double min, double max,
                               const std::string& help, bool minOpen, const std::string& group) {
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Real;
  s.metavar = metavar;
  s.help = help;
  s.group = group;
  s.realMin = min;
  s.realMax = max;
  s.minOpen = minOpen;
  s.defaultText = formatReal(def);
  try {
    validate(s, *s.defaultText);
  } catch (const ParameterError&) {
    throw std::logic_error("option table '" + command_ + "': default of --" + name + " outside its range");
  }
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::text(const std::string& name, const std::string& metavar, std::optional<std::string> def,
                               const std::string& help, bool repeatable, const std::string& group) {
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Text;
  s.metavar = metavar;
  s.help = help;
  s.group = group;
  s.defaultText = std::move(def);
  s.repeatable = repeatable;
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::choice(const std::string& name, std::vector<std::string> choices,
                                 std::optional<std::string> def, const std::string& help, const std::string& suggested,
                                 const std::string& group) {
  OptionSpec s;
  s.name = name;
  s.type = OptionType::Choice;
  s.metavar = join(choices, "|");
  s.choices = std::move(choices);
  s.help = help;
  s.group = group;
  s.defaultText = std::move(def);
  s.suggested = suggested;
  try {
    if (s.defaultText) validate(s, *s.defaultText);
    if (!s.suggested.empty()) validate(s, s.suggested);
  } catch (const ParameterError&) {
    throw std::logic_error("option table '" + command_ + "': default of --" + name + " is not one of its choices");
  }
  add(std::move(s));
  return *this;
}

OptionTable& OptionTable::positionals(std::vector<std::string> names, int maxCount) {
  positionalNames_ = std::move(names);
  maxPositionals_ = maxCount;
  return *this;
}

const OptionSpec* OptionTable::find(const std::string& name) const {
  for (const auto& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

const OptionSpec& OptionTable::at(const std::string& name) const {
  if (const OptionSpec* o = find(name)) return *o;
  throw std::logic_error("option table '" + command_ + "': no option --" + name);
}

OptionValues OptionTable::parse(const std::vector<std::string>& args) const {
  OptionValues v(this);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& s = args[i];
    if (s == "-h" || s == "--help") {
      v.set("help", "");
      continue;
    }
    if (s.size() <= 2 || s.rfind("--", 0) != 0) {
      v.positional.push_back(s);
      continue;
    }
    std::string name = s.substr(2);
    std::optional<std::string> inlineValue;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inlineValue = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const OptionSpec* o = find(name);
    if (!o) {
      std::vector<std::string> names;
      for (const auto& x : options_) names.push_back(x.name);
      std::string msg = "unknown option --" + name;
      std::string near = closestName(name, names);
      if (!near.empty())
        msg += " (did you mean --" + near + "?)";
      else
        msg += " (see moefy " + command_ + " --help)";
      throw ParameterError(msg);
    }
    if (!o->repeatable && v.has(name)) throw ParameterError("--" + name + ": given more than once");
    if (o->type == OptionType::Flag) {
      if (inlineValue) throw ParameterError("--" + name + ": takes no value");
      v.set(name, "");
      continue;
    }
    std::string value;
    if (inlineValue) {
      value = *inlineValue;
    } else {
      if (i + 1 >= args.size()) throw ParameterError("--" + name + ": missing value " + o->metavar);
      // `--device --ids 1,2` is a forgotten value, not the value "--ids".
      const std::string& next = args[i + 1];
      const std::string nextName =
          next.size() > 2 && next.rfind("--", 0) == 0 ? next.substr(2, next.find('=') - 2) : "";
      if (!nextName.empty() && (find(nextName) || nextName == "help"))
        throw ParameterError("--" + name + ": missing value " + o->metavar + " (the next argument, " + next +
                             ", is an option)");
      value = args[++i];
    }
    validate(*o, value);
    v.set(name, value);
  }
  if (maxPositionals_ >= 0 && v.positional.size() > static_cast<size_t>(maxPositionals_) && !v.has("help"))
    throw ParameterError("unexpected argument '" + v.positional[static_cast<size_t>(maxPositionals_)] +
                         "' (usage: moefy " + command_ + " " + join(positionalNames_, " ") + " [options])");
  return v;
}

namespace {

std::string defaultWords(const OptionSpec& o) {
  if (o.type == OptionType::Flag || !o.defaultText) return {};
  if (o.defaultText->empty()) return {};
  return "default " + *o.defaultText;
}

std::string optionHead(const OptionSpec& o) {
  return "--" + o.name + (o.type == OptionType::Flag || o.type == OptionType::Choice ? "" : " " + o.metavar) +
         (o.type == OptionType::Choice ? " " + o.metavar : "");
}

// Wraps `text` at `width` columns, continuation lines indented by `indent`.
std::string wrap(const std::string& text, size_t width, size_t indent) {
  std::istringstream in(text);
  std::string word, out, line;
  while (in >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      out += line + "\n" + std::string(indent, ' ');
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  return out + line;
}

std::string details(const OptionSpec& o) {
  std::vector<std::string> parts;
  if (auto d = defaultWords(o); !d.empty()) parts.push_back(d);
  if (o.type == OptionType::Int || o.type == OptionType::Real) parts.push_back("range " + o.rangeText());
  if (o.repeatable) parts.push_back("repeatable");
  return parts.empty() ? "" : " (" + join(parts, "; ") + ")";
}

}  // namespace

std::string OptionTable::helpText() const {
  std::string out = "usage: " + synopsis_;
  if (out.back() != '\n') out += "\n";
  out += "\n" + description_;
  if (!description_.empty() && description_.back() != '\n') out += "\n";
  std::vector<std::string> groups = {""};
  for (const auto& o : options_)
    if (std::find(groups.begin(), groups.end(), o.group) == groups.end()) groups.push_back(o.group);
  for (const auto& g : groups) {
    out += g.empty() ? "\noptions:\n" : "\n" + g + ":\n";
    for (const auto& o : options_) {
      if (o.group != g) continue;
      std::string head = "  " + optionHead(o);
      std::string body = o.help + details(o);
      if (head.size() < 26)
        out += head + std::string(26 - head.size(), ' ') + wrap(body, 72, 26) + "\n";
      else
        out += head + "\n" + std::string(26, ' ') + wrap(body, 72, 26) + "\n";
    }
  }
  return out;
}

std::string OptionTable::markdown() const {
  std::string out = "## moefy " + command_ + "\n\n" + summary_ + ".\n\n```\nusage: " + synopsis_;
  if (out.back() != '\n') out += "\n";
  out += "```\n\n" + description_;
  if (!description_.empty() && description_.back() != '\n') out += "\n";
  out += "\n| option | default | range | meaning |\n|---|---|---|---|\n";
  auto cell = [](std::string s) {
    std::string r;
    for (char c : s) r += c == '|' ? std::string("\\|") : std::string(1, c);
    return r;
  };
  for (const auto& o : options_) {
    std::string range = o.type == OptionType::Choice ? join(o.choices, ", ") : o.rangeText();
    std::string def = o.type == OptionType::Flag ? "off" : (o.defaultText ? *o.defaultText : "");
    std::string help = (o.group.empty() ? "" : o.group + ": ") + o.help + (o.repeatable ? " (repeatable)" : "");
    out += "| `" + cell(optionHead(o)) + "` | " + cell(def.empty() ? "-" : "`" + def + "`") + " | " +
           cell(range.empty() ? "-" : range) + " | " + cell(help) + " |\n";
  }
  return out;
}

nlohmann::json OptionTable::toJson() const {
  nlohmann::json opts = nlohmann::json::array();
  for (const auto& o : options_) {
    nlohmann::json j = {{"name", o.name}, {"type", typeName(o.type)}, {"help", o.help}};
    j["default"] = o.defaultText ? nlohmann::json(*o.defaultText) : nlohmann::json(nullptr);
    if (!o.suggested.empty()) j["suggested"] = o.suggested;
    if (o.type == OptionType::Int) j["range"] = {o.intMin, o.intMax};
    if (o.type == OptionType::Real) {
      j["range"] = {o.realMin, o.realMax};
      j["min_open"] = o.minOpen;
    }
    if (o.type == OptionType::Choice) j["choices"] = o.choices;
    if (o.repeatable) j["repeatable"] = true;
    if (!o.group.empty()) j["group"] = o.group;
    opts.push_back(j);
  }
  return {{"command", command_}, {"summary", summary_}, {"positionals", positionalNames_}, {"options", opts}};
}

// ---- OptionValues ------------------------------------------------------------

void OptionValues::set(const std::string& name, std::string value) { values_.emplace_back(name, std::move(value)); }

bool OptionValues::has(const std::string& name) const {
  if (name != "help") table_->at(name);  // a misspelt name in code is a bug, not "absent"
  for (const auto& [n, v] : values_)
    if (n == name) return true;
  return false;
}

const OptionSpec& OptionValues::spec(const std::string& name, OptionType expected, bool alsoChoice) const {
  const OptionSpec& o = table_->at(name);
  if (o.type != expected && !(alsoChoice && o.type == OptionType::Choice))
    throw std::logic_error("option table '" + table_->command() + "': --" + name + " is not of type " +
                           typeName(expected));
  return o;
}

bool OptionValues::flag(const std::string& name) const {
  spec(name, OptionType::Flag);
  return has(name);
}

namespace {
const std::string* lastValue(const std::vector<std::pair<std::string, std::string>>& values, const std::string& name) {
  const std::string* v = nullptr;
  for (const auto& [n, x] : values)
    if (n == name) v = &x;
  return v;
}
}  // namespace

int64_t OptionValues::integer(const std::string& name) const {
  const OptionSpec& o = spec(name, OptionType::Int);
  if (const std::string* v = lastValue(values_, name)) return parseInt64(o, *v);
  if (!o.defaultText) throw ParameterError("--" + name + " is required");
  return std::stoll(*o.defaultText);  // a sentinel default may lie outside the range
}

int OptionValues::int32(const std::string& name) const {
  const int64_t v = integer(name);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw ParameterError("--" + name + ": " + std::to_string(v) + " does not fit a 32-bit integer");
  return static_cast<int>(v);
}

uint64_t OptionValues::seed(const std::string& name) const {
  const int64_t v = integer(name);
  if (v < 0) throw ParameterError("--" + name + ": must be >= 0, got " + std::to_string(v));
  return static_cast<uint64_t>(v);
}

double OptionValues::real(const std::string& name) const {
  const OptionSpec& o = spec(name, OptionType::Real);
  if (const std::string* v = lastValue(values_, name)) return parseReal(o, *v);
  if (!o.defaultText) throw ParameterError("--" + name + " is required");
  return std::stod(*o.defaultText);
}

std::string OptionValues::text(const std::string& name) const {
  const OptionSpec& o = spec(name, OptionType::Text, true);
  if (const std::string* v = lastValue(values_, name)) return *v;
  if (!o.defaultText) throw ParameterError("--" + name + " is required");
  return *o.defaultText;
}

std::vector<std::string> OptionValues::all(const std::string& name) const {
  table_->at(name);
  std::vector<std::string> out;
  for (const auto& [n, v] : values_)
    if (n == name) out.push_back(v);
  return out;
}

// ---- typo hints --------------------------------------------------------------

int editDistance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

std::string closestName(const std::string& name, const std::vector<std::string>& candidates) {
  // A different case only ("RB" for "rb", "Coact") is a typo whatever its length.
  auto lower = [](std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  for (const auto& c : candidates)
    if (lower(c) == lower(name)) return c;
  std::string best;
  int bestDistance = std::numeric_limits<int>::max();
  for (const auto& c : candidates) {
    int dist = editDistance(name, c);
    if (dist < bestDistance) bestDistance = dist, best = c;
  }
  const int limit = std::max(1, std::min(3, static_cast<int>(name.size()) / 3));
  if (bestDistance <= limit) return best;
  // A clipped spelling ("--checkpoint" for "--checkpoint-every") is also a typo.
  if (name.size() >= 4)
    for (const auto& c : candidates)
      if (c.rfind(name, 0) == 0) return c;
  return {};
}

}  // namespace moefy
