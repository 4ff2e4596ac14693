#pragma once
// The moefy CLI's subcommand registry and argument parser. Each cmd_*.cpp
// file registers one or more subcommands with a static CommandRegistrar, so
// adding a command needs no edit elsewhere.
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moefy {
class JobContext;
}

namespace moefy::cli {

/// Parsed arguments: positionals in order, options as name -> values
/// ("--ids 1,2 --ids 3" gives {"ids": ["1,2", "3"]}), flags as options with "".
class Args {
 public:
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;

  bool has(const std::string& name) const { return options.count(name) > 0; }
  /// Last value of --name, or `fallback`.
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> getAll(const std::string& name) const;
  /// Parsed numbers; throw ParameterError naming the option on bad input.
  long long getInt(const std::string& name, long long fallback) const;
  double getDouble(const std::string& name, double fallback) const;
  /// Positional i, or throws ParameterError("missing <what>").
  const std::string& pos(size_t i, const std::string& what) const;
  bool json() const { return has("json"); }
};

struct Command {
  std::string name;
  std::string summary;  ///< one line for `moefy --help`
  std::string usage;    ///< full text for `moefy NAME --help`
  /// Option names that take no value (e.g. "json", "force"); others take one.
  std::vector<std::string> flags;
  std::function<int(const Args&)> run;
};

struct CommandRegistrar {
  explicit CommandRegistrar(Command command);
};

/// Runs another registered subcommand in-process with the given arguments
/// (as after "moefy NAME"), exactly as the command line would. Returns its exit
/// code; errors propagate as exceptions.
int runSubcommand(const std::string& name, const std::vector<std::string>& args);

/// Prints a JSON document to stdout (pretty, one trailing newline).
void printJson(const nlohmann::json& j);
/// Splits "1,2,3" into integers; throws ParameterError naming `what`.
std::vector<long long> parseIntList(const std::string& text, const std::string& what);
std::vector<double> parseDoubleList(const std::string& text, const std::string& what);
/// A JobContext for terminals: a progress line per stage (and every 10%) on
/// stderr, log lines on stderr; silent with --quiet. SIGINT cancels the job.
std::unique_ptr<JobContext> makeCliJob(const Args& args);

}  // namespace moefy::cli
