// moefy-studio: the desktop application. The window and views live in views/.
//
//   moefy-studio [WORKSPACE_DIR] [--demo] [--screenshots OUT_DIR]
//
// With no workspace argument the last workspace is reopened; on first run (or
// with --demo) the bundled demo workspace opens. --screenshots writes a PNG of
// each main view into OUT_DIR and exits (use QT_QPA_PLATFORM=offscreen).
#include <QApplication>
#include <QCommandLineParser>
#include <QFileInfo>
#include <QSettings>
#include <cstdio>

#include "analysis/common/runtime.h"
#include "views/mainwindow.h"

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
  QCommandLineOption size("size", "Window size for --screenshots, WxH (default 1400x900).", "WxH", "1400x900");
  cli.addOptions({demo, shots, size});
  cli.process(app);

  moefy::views::MainWindow w;
  const QStringList pos = cli.positionalArguments();
  QString last = QSettings().value("lastWorkspace").toString();
  bool ok = false;
  if (!pos.isEmpty()) ok = w.openWorkspace(pos.first());
  else if (!cli.isSet(demo) && !cli.isSet(shots) && !last.isEmpty() && QFileInfo::exists(last + "/workspace.json"))
    ok = w.openWorkspace(last);
  if (!ok && (pos.isEmpty() || cli.isSet(demo))) w.openDemo();

  if (cli.isSet(shots)) {
    QStringList wh = cli.value(size).split('x');
    QSize sz(wh.value(0).toInt(), wh.value(1).toInt());
    if (!sz.isValid() || sz.width() < 400) sz = QSize(1400, 900);
    QStringList files = w.writeScreenshots(cli.value(shots), sz);
    for (const QString& f : files) std::printf("%s\n", qPrintable(f));
    return files.isEmpty() ? 1 : 0;
  }
  w.show();
  return app.exec();
}
