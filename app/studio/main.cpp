// moefy-studio: the desktop application. The window and views live in views/.
//
//   moefy-studio [WORKSPACE_DIR] [--demo] [--screenshots OUT_DIR [--size WxH]]
//
// With no workspace argument the last workspace is reopened; on first run (or
// with --demo) the bundled demo workspace opens. --screenshots writes a PNG of
// each main view into OUT_DIR and exits (use QT_QPA_PLATFORM=offscreen).
//
// Like the CLI, a malformed option (unknown, missing value, a bad --size, a
// second positional argument) is refused with one line on stderr and exit 2.
// In batch mode (--screenshots) a workspace that does not open is one line on
// stderr naming the file and exit 1, and nothing is written; interactively
// the error goes to the issues dock.
#include <QApplication>
#include <QCommandLineParser>
#include <QFileInfo>
#include <QRegularExpression>
#include <QSettings>
#include <cstdio>
#include <optional>

#include "analysis/common/omp_wait_policy.h"
#include "analysis/common/runtime.h"
#include "views/mainwindow.h"

namespace {

// One line on stderr (the first line of `msg`), as the CLI's refusals; returns `code`.
int refuse(const QString& msg, int code) {
  std::fprintf(stderr, "moefy-studio: %s\n", qPrintable(msg.section('\n', 0, 0)));
  return code;
}

// "1400x900" -> the size; nullopt unless W in [400, 8192] and H in [300, 8192].
std::optional<QSize> parseSize(const QString& text) {
  static const QRegularExpression re("^(\\d{1,5})x(\\d{1,5})$");
  const QRegularExpressionMatch m = re.match(text);
  if (!m.hasMatch()) return std::nullopt;
  const QSize sz(m.captured(1).toInt(), m.captured(2).toInt());
  if (sz.width() < 400 || sz.width() > 8192 || sz.height() < 300 || sz.height() > 8192) return std::nullopt;
  return sz;
}

}  // namespace

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("MoEfy Studio");
  QApplication::setOrganizationName("MoEfy");
  QApplication::setApplicationVersion(MOEFY_VERSION);
  QApplication::setDesktopFileName("moefy-studio");
  QApplication::setWindowIcon(QIcon(":/moefy-studio.svg"));
  moefy::configureRuntime();

  QCommandLineParser cli;
  cli.setApplicationDescription("MoEfy Studio: turn Transformer FFNs into Mixtures of Experts and look at them.");
  cli.addHelpOption();
  cli.addVersionOption();
  cli.addPositionalArgument("workspace", "Workspace folder (with workspace.json) to open.");
  QCommandLineOption demo("demo", "Open the bundled demo workspace.");
  QCommandLineOption shots("screenshots", "Write a PNG of each main view into DIR and exit.", "DIR");
  QCommandLineOption size("size",
                          "Window size WxH, W in [400, 8192], H in [300, 8192] (default for --screenshots: 1400x900).",
                          "WxH", "1400x900");
  cli.addOptions({demo, shots, size});
  // parse() rather than process(): process() exits 1 on an unknown option; the
  // CLI's convention is 2. process() then only handles --help and --version.
  if (!cli.parse(QCoreApplication::arguments())) return refuse(cli.errorText(), 2);
  cli.process(app);
  const QStringList pos = cli.positionalArguments();
  if (pos.size() > 1) return refuse(QString("unexpected argument '%1' (one WORKSPACE_DIR at most)").arg(pos[1]), 2);
  QSize shotSize(1400, 900);
  if (cli.isSet(size)) {
    const std::optional<QSize> sz = parseSize(cli.value(size));
    if (!sz)
      return refuse(QString("--size: '%1' is not WxH with W in [400, 8192] and H in [300, 8192]").arg(cli.value(size)),
                    2);
    shotSize = *sz;
  }
  // Batch (non-interactive) mode: every failure is an exit status, not a dock message.
  const bool batch = cli.isSet(shots);
  if (batch && cli.value(shots).trimmed().isEmpty()) return refuse("--screenshots: empty DIR", 2);

  moefy::views::MainWindow w;
  QString last = QSettings().value("lastWorkspace").toString();
  QString error;
  bool ok = false;
  if (!pos.isEmpty())
    ok = w.openWorkspace(pos.first(), &error);
  else if (!cli.isSet(demo) && !batch && !last.isEmpty() && QFileInfo::exists(last + "/workspace.json"))
    ok = w.openWorkspace(last);
  if (batch && !pos.isEmpty() && !ok) return refuse(error, 1);
  if (!ok && (pos.isEmpty() || cli.isSet(demo))) ok = w.openDemo(&error);
  if (batch && !ok) return refuse(error.isEmpty() ? QString("no workspace to open") : error, 1);

  if (batch) {
    QStringList files = w.writeScreenshots(cli.value(shots), shotSize);
    for (const QString& f : files) std::printf("%s\n", qPrintable(f));
    if (files.isEmpty()) return refuse(cli.value(shots) + ": no screenshot written", 1);
    return 0;
  }
  if (cli.isSet(size)) w.resize(shotSize);
  w.show();
  return app.exec();
}
