// moefy-studio: the desktop application. The real window lives in views/.
#include <QApplication>
#include <QLabel>
#include <QMainWindow>

#include "analysis/common/runtime.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("MoEfy Studio");
  moefy::configureRuntime();
  QMainWindow w;
  w.setWindowTitle("MoEfy Studio");
  w.setCentralWidget(new QLabel("MoEfy Studio " MOEFY_VERSION));
  w.resize(1200, 800);
  w.show();
  return app.exec();
}
