#pragma once
// Option tables: every option of a command or pipeline step is declared once
// (name, type, range, default, help), and the CLI parser, `moefy CMD --help`,
// the studio's step dialogs and docs/cli.md are generated from that
// declaration. The tables of the pipeline steps live next to their options
// structs (e.g. recordOptionTable() in analysis/record/record_options.h) and
// take their defaults from a default-constructed struct.
//
// Parsing is strict: an unknown option is refused with a "did you mean" hint
// (edit distance), integers are read and range-checked in 64 bits before any
// narrowing, and reals refuse NaN, infinities and values outside their range.
// Every error is a ParameterError whose message names the option.
//
// Thread-safety: an OptionTable is immutable after construction and may be
// read from any thread; the accessor functions return function-local statics
// that are initialised thread-safely.
#include <cstdint>
#include <limits>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace moefy {

enum class OptionType {
  Flag,    ///< no value; present or not
  Int,     ///< signed 64-bit integer in [intMin, intMax]
  Real,    ///< finite double in [realMin, realMax] (or (realMin, ...] when minOpen)
  Text,    ///< free text (paths, lists, rules); validated by the command
  Choice,  ///< one of `choices`
};

/// One option. `name` is the spelling without the leading "--".
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::Text;
  std::string metavar;  ///< value placeholder in help ("N", "DIR"); empty for flags
  std::string help;     ///< one sentence; may mention the meaning of a sentinel default
  /// The default's canonical text ("256", "0.25", "coact"; "" for a text
  /// option without default). Unset (nullopt) = no default: the option is
  /// required or its absence means something the help explains.
  std::optional<std::string> defaultText;
  /// A value a form (the studio's dialog) proposes when there is no default.
  std::string suggested;
  int64_t intMin = std::numeric_limits<int64_t>::min();
  int64_t intMax = std::numeric_limits<int64_t>::max();
  double realMin = -std::numeric_limits<double>::max();
  double realMax = std::numeric_limits<double>::max();
  bool minOpen = false;              ///< Real: realMin itself is refused
  std::vector<std::string> choices;  ///< Choice
  bool repeatable = false;           ///< may be given several times (all values kept)
  std::string group;                 ///< help section ("kmeans", "--merge"); empty = main

  /// The range in words, e.g. "[2, 65536]" or "(0, 1]"; empty for text/flags.
  std::string rangeText() const;
};

class OptionValues;

/// The declared options of one command (or pipeline step).
class OptionTable {
 public:
  /// `command`: "record"; `synopsis`: the usage lines after "usage: ";
  /// `description`: paragraphs shown after the usage and in docs/cli.md.
  OptionTable(std::string command, std::string summary, std::string synopsis, std::string description);

  // Builders (chainable). Each throws std::logic_error on a duplicate name or a
  // default outside its range unless `sentinel` says the default is a
  // "not given" marker that the help explains.
  OptionTable& flag(const std::string& name, const std::string& help, const std::string& group = {});
  OptionTable& integer(const std::string& name, const std::string& metavar, int64_t def, int64_t min, int64_t max,
                       const std::string& help, const std::string& group = {}, bool sentinel = false);
  /// An integer without a default (required, or absence has a meaning); a form shows `suggested`.
  OptionTable& integerNoDefault(const std::string& name, const std::string& metavar, int64_t min, int64_t max,
                                const std::string& help, const std::string& suggested = {},
                                const std::string& group = {});
  OptionTable& real(const std::string& name, const std::string& metavar, double def, double min, double max,
                    const std::string& help, bool minOpen = false, const std::string& group = {});
  /// Free text; `def` nullopt = no default. `repeatable`: several values kept.
  OptionTable& text(const std::string& name, const std::string& metavar, std::optional<std::string> def,
                    const std::string& help, bool repeatable = false, const std::string& group = {});
  /// One of `choices`; `def` nullopt = required/no default (a form proposes `suggested`).
  OptionTable& choice(const std::string& name, std::vector<std::string> choices, std::optional<std::string> def,
                      const std::string& help, const std::string& suggested = {}, const std::string& group = {});
  /// Positional arguments in help ("MODEL_DIR", "CORPUS"); `maxCount` -1 = any number.
  OptionTable& positionals(std::vector<std::string> names, int maxCount);

  const std::string& command() const { return command_; }
  const std::string& summary() const { return summary_; }
  const std::vector<OptionSpec>& options() const { return options_; }
  /// The option named `name`, or null.
  const OptionSpec* find(const std::string& name) const;
  /// The option named `name`; throws std::logic_error if undeclared (a programming error).
  const OptionSpec& at(const std::string& name) const;

  /// Parses arguments (as after "moefy COMMAND"). "--name value", "--name=value",
  /// "--flag"; anything else is positional. "--help"/"-h" are always accepted.
  /// Throws ParameterError: unknown option (with "did you mean --x?"), missing
  /// value, a value for a flag, a repeated non-repeatable option, an integer
  /// or real that does not parse or is out of range, a choice not in the list,
  /// too many positional arguments.
  OptionValues parse(const std::vector<std::string>& args) const;

  /// `moefy COMMAND --help`: usage, description, then every option with its
  /// default and range.
  std::string helpText() const;
  /// A Markdown section for docs/cli.md.
  std::string markdown() const;
  /// Machine-readable form (name, type, default, range, choices, help) for
  /// `moefy help --json` and tests.
  nlohmann::json toJson() const;

 private:
  OptionSpec& add(OptionSpec spec);

  std::string command_, summary_, synopsis_, description_;
  std::vector<std::string> positionalNames_;
  int maxPositionals_ = -1;
  std::vector<OptionSpec> options_;
};

/// Parsed, validated values of one OptionTable. Accessors return the given
/// value or the declared default; asking for an undeclared option, or reading
/// an option as the wrong type, throws std::logic_error (a programming error).
class OptionValues {
 public:
  explicit OptionValues(const OptionTable* table) : table_(table) {}

  std::vector<std::string> positional;

  const OptionTable& table() const { return *table_; }
  /// Whether the option was given on the command line.
  bool has(const std::string& name) const;
  /// Flag given.
  bool flag(const std::string& name) const;
  /// Integer value (already range-checked in 64 bits). Throws ParameterError
  /// "--name is required" if neither given nor defaulted.
  int64_t integer(const std::string& name) const;
  /// integer() narrowed to int; the declared range must fit (checked, else ParameterError).
  int int32(const std::string& name) const;
  /// integer() as an unsigned seed (the range must be non-negative).
  uint64_t seed(const std::string& name) const;
  double real(const std::string& name) const;
  /// Text/choice value (last one given), or the default; ParameterError if required and absent.
  std::string text(const std::string& name) const;
  /// Every value given for a repeatable option, in order.
  std::vector<std::string> all(const std::string& name) const;

  /// Records a value (used by OptionTable::parse; validated there).
  void set(const std::string& name, std::string value);

 private:
  const OptionSpec& spec(const std::string& name, OptionType expected, bool alsoChoice = false) const;
  const OptionTable* table_;
  std::vector<std::pair<std::string, std::string>> values_;
};

/// Edit distance (optimal string alignment: insertions, deletions,
/// substitutions and adjacent transpositions each cost 1).
int editDistance(const std::string& a, const std::string& b);
/// The candidate closest to `name` if it is close enough to be a typo (equal
/// but for letter case, or distance <= max(1, min(3, |name| / 3)), or `name`
/// a prefix of it), else "".
std::string closestName(const std::string& name, const std::vector<std::string>& candidates);

/// The entries of a comma-separated list value of `option` ("--layers"),
/// each trimmed of blanks: "0, 2,5" -> {"0", "2", "5"}. Blank text gives an
/// empty list (the caller decides what that means). An empty entry (a doubled,
/// leading or trailing comma: "0,,1", ",1", "1,") throws ParameterError
/// "--layers: empty entry in '0,,1' (a doubled, leading or trailing comma)".
/// Every list-valued option is split here, so all refuse alike.
std::vector<std::string> splitListValue(const std::string& text, const std::string& option);

/// Number formatting used for defaults in help and docs ("0.001", "1e-06", "300").
std::string formatReal(double v);

}  // namespace moefy
