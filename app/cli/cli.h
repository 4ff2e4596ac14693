#pragma once
// The moefy CLI's subcommand registry. Each cmd_*.cpp file registers its
// subcommands with a static CommandRegistrar over the command's OptionTable
// (analysis/common/options.h), so the parser, `--help`, `moefy help
// --markdown` (docs/cli.md) and the studio's dialogs share one declaration
// of every option.
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/common/options.h"
#include "analysis/project/artefact.h"

namespace moefy {
class JobContext;
}

namespace moefy::cli {

/// Parsed, validated arguments of one command: its OptionValues plus helpers.
class Args : public OptionValues {
 public:
  explicit Args(OptionValues values) : OptionValues(std::move(values)) {}
  /// Positional i, or throws ParameterError("missing argument <what>").
  const std::string& pos(size_t i, const std::string& what) const;
  bool json() const { return has("json"); }
};

struct Command {
  const OptionTable* table = nullptr;  ///< name, summary, options, help
  std::function<int(const Args&)> run;
};

struct CommandRegistrar {
  CommandRegistrar(const OptionTable& table, std::function<int(const Args&)> run);
};

/// Runs another registered subcommand in-process with the given arguments
/// (as after "moefy NAME"), exactly as the command line would. Returns its exit
/// code; errors propagate as exceptions.
int runSubcommand(const std::string& name, const std::vector<std::string>& args);

/// Prints a JSON document to stdout (pretty, one trailing newline).
void printJson(const nlohmann::json& j);
/// A metric for a table: a JSON number with 4 decimals ("%.4f"), or "n/a"
/// for anything else (null, absent: a metric the artefact does not have).
std::string metricText(const nlohmann::json& v);
/// Splits "1,2,3" into integers (each parsed in 64 bits); throws ParameterError naming `what`
/// for an empty list, an empty entry (splitListValue) or an item that is not an integer.
std::vector<long long> parseIntList(const std::string& text, const std::string& what);
/// Checks the links the artefact `dir` of `kind` records (artefactLinks,
/// analysis/project/link_check.h) and prints one line per broken or stale link
/// on stderr, "moefy COMMAND: warning: <kind> <message>", also with --quiet: an
/// input that changed since the artefact was made is never used silently.
/// Returns the number of problems. Throws the kind reader's error for an
/// unreadable metadata file.
int warnLinkProblems(const std::string& command, ArtefactKind kind, const std::filesystem::path& dir);
/// A JobContext for terminals: a progress line per stage (and every 10%) on
/// stderr, log lines on stderr; silent with --quiet. SIGINT cancels the job.
std::unique_ptr<JobContext> makeCliJob(const Args& args);

}  // namespace moefy::cli
