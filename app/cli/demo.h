#pragma once
// Shared pieces of `moefy demo` (cmd_demo.cpp: the language-model demo) and
// `moefy demo --translation` (cmd_demo_translation.cpp: the T5 translation
// study): the bundled data folder, number formatting, and the stage runner
// that runs each step as the subcommand a user would type.
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "app/cli/cli.h"

namespace moefy::report {
class Report;
}

namespace moefy::cli::demo {

/// The bundled data folder: $MOEFY_DATA_DIR, else the source tree's data/.
std::filesystem::path dataDir();
/// v with `digits` decimals ("%.*f").
std::string fmt(double v, int digits = 3);

/// Runs the demo's stages in order: prints "[demo i/N] name ..." and the wall
/// time on stderr, sends each stage's stdout to DIR/logs/NAME.log, and keeps
/// the stage times for the report. Not thread-safe (one demo per process).
class Stages {
 public:
  explicit Stages(int count) : count_(count) {}
  /// The folder being written (logs/ is created in it).
  void setDir(const std::filesystem::path& dir);
  void stage(const std::string& name, const std::function<void()>& fn);
  /// Runs `moefy CMD ARGS --quiet` in this process; throws Error naming the
  /// stage when it exits non-zero.
  static void run(const std::string& cmd, std::vector<std::string> args);
  const std::vector<std::pair<std::string, double>>& times() const { return times_; }

 private:
  int count_ = 0, done_ = 0;
  std::filesystem::path dir_;
  std::vector<std::pair<std::string, double>> times_;
};

/// The report's "Run" section: a table of the stage wall times (Stages::times())
/// and their total.
void stageTimesSection(report::Report& rep, const std::vector<std::pair<std::string, double>>& times);

/// `moefy demo --translation`: the T5 translation study on the bundled
/// English-Spanish model and corpus (cmd_demo_translation.cpp).
int runTranslationDemo(const Args& a);

}  // namespace moefy::cli::demo
