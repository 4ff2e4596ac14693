#include "testutil.h"

#include <QProcess>
#include <QProcessEnvironment>
#include <QtGlobal>
#include <cstdlib>

namespace moefy::test {

namespace fs = std::filesystem;

fs::path sourceDir() {
  if (const char* s = std::getenv("MOEFY_SOURCE_DIR")) return s;
  return MOEFY_SOURCE_DIR;
}

fs::path binaryDir() {
  if (const char* s = std::getenv("MOEFY_BINARY_DIR")) return s;
  return MOEFY_TEST_BINARY_DIR;  // never the working directory: that may be the repository
}

fs::path freshDir(const std::string& name) {
  fs::path p = binaryDir() / "test-tmp" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

RunResult run(const QString& program, const QStringList& args, int timeoutSec, const std::string& stdinData) {
  QProcess p;
  p.start(program, args);
  RunResult r;
  if (!p.waitForStarted(10000)) {
    r.err = "failed to start " + program.toStdString();
    return r;
  }
  if (!stdinData.empty()) p.write(stdinData.data(), static_cast<qint64>(stdinData.size()));
  p.closeWriteChannel();
  if (!p.waitForFinished(timeoutSec * 1000)) {
    p.kill();
    p.waitForFinished();
    r.err = "timeout";
    return r;
  }
  r.out = p.readAllStandardOutput().toStdString();
  r.err = p.readAllStandardError().toStdString();
  r.exitCode = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
  return r;
}

RunResult runCli(const QStringList& args, int timeoutSec) {
  QString cli = qEnvironmentVariable("MOEFY_CLI");
  if (cli.isEmpty()) cli = QString::fromStdString((binaryDir() / "app" / "moefy").string());
  return run(cli, args, timeoutSec);
}

RunResult runStudio(const QStringList& args, int timeoutSec) {
  QString studio = qEnvironmentVariable("MOEFY_STUDIO");
  if (studio.isEmpty()) studio = QString::fromStdString((binaryDir() / "app" / "moefy-studio").string());
  return run(studio, args, timeoutSec);
}

RunResult runPython(const QStringList& args, int timeoutSec) {
  // Debian's interpreter, not a pyenv shim: it is the one with python3-torch.
  QString py = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  return run(py, args, timeoutSec);
}

bool runCliStep(const QStringList& args, std::string* out) {
  const RunResult r = runCli(args + QStringList{"--quiet"});
  if (r.exitCode != 0) qWarning("moefy %s: %s", qPrintable(args.join(" ")), r.err.c_str());
  if (out) *out = r.out;
  return r.exitCode == 0;
}

bool runFixture(const QStringList& args) {
  const QString script = QString::fromStdString((sourceDir() / "scripts" / "ref" / "moe_fixtures.py").string());
  const RunResult r = runPython(QStringList{script} + args);
  if (r.exitCode != 0) qWarning("moe_fixtures.py %s: %s", qPrintable(args.join(" ")), (r.out + r.err).c_str());
  return r.exitCode == 0;
}

}  // namespace moefy::test
