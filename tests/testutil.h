#pragma once
// Shared helpers for the Qt Test executables.
#include <QString>
#include <QStringList>
#include <filesystem>
#include <string>

namespace moefy::test {

/// Repository root (MOEFY_SOURCE_DIR from CTest, else the compile-time path).
std::filesystem::path sourceDir();
/// Build folder (MOEFY_BINARY_DIR from the environment, else the tree the test was built in).
std::filesystem::path binaryDir();
/// A fresh, empty folder under the build tree for this test, removed first if present.
std::filesystem::path freshDir(const std::string& name);

struct RunResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

/// Runs a program with a timeout (seconds); exitCode -1 on crash or timeout.
RunResult run(const QString& program, const QStringList& args, int timeoutSec = 600, const std::string& stdinData = {});
/// Runs the moefy CLI built with this tree.
RunResult runCli(const QStringList& args, int timeoutSec = 600);
/// Runs the moefy-studio built with this tree (MOEFY_STUDIO, else build/app/moefy-studio);
/// the Qt platform comes from the environment (offscreen under CTest).
RunResult runStudio(const QStringList& args, int timeoutSec = 600);
/// Runs Debian's python3 (which has numpy and torch) on a repo script.
RunResult runPython(const QStringList& args, int timeoutSec = 600);

/// A pipeline step a test needs to succeed: runs moefy ARGS --quiet (runCli),
/// or python3 scripts/ref/moe_fixtures.py ARGS (runFixture); on failure logs
/// the command and its output (qWarning) and returns false, for QVERIFY at the
/// call site. `out` receives stdout when given.
bool runCliStep(const QStringList& args, std::string* out = nullptr);
bool runFixture(const QStringList& args);

}  // namespace moefy::test
