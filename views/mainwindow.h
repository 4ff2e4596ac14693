#pragma once
// The Studio's main window: workspace tree, tabbed views, log/issues dock,
// neuron inspector, job bar, menus and shortcuts. Layout is kept in QSettings.
#include <QLabel>
#include <QListWidget>
#include <QMainWindow>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QTabWidget>
#include <QTreeWidget>

#include "views/context.h"

namespace moefy::views {

class FigureView;
class NeuronInspector;

/// Where the bundled data lives (MOEFY_DATA_DIR, next to the executable, or the source tree).
QString findDataDir();
/// The demo workspace: data/demo-workspace if it exists, else one created in the
/// user's data folder that points at the bundled model and corpus. Empty on failure (*error set).
QString demoWorkspaceDir(QString* error);
/// The same for the translation demo (translation true: data/demo-translation-workspace,
/// or the output of `moefy demo --translation --out data/demo-translation`, else one
/// in the user's data folder over data/models/bible-t5 and data/corpus/bible-en-es).
QString demoWorkspaceDir(bool translation, QString* error);

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  StudioContext* context() const { return ctx_; }
  QTabWidget* tabs() const { return tabs_; }
  /// All views in tab order.
  QList<QWidget*> views() const;
  FigureView* figureView(int tab) const;
  QListWidget* issues() const { return issues_; }
  QPlainTextEdit* log() const { return log_; }
  QProgressBar* jobProgress() const { return progress_; }
  QPushButton* cancelButton() const { return cancel_; }
  QLabel* jobStage() const { return stage_; }

  /// Opens a workspace folder; false on failure (the message, naming the file,
  /// goes to the issues dock and to *error if given).
  bool openWorkspace(const QString& dir, QString* error = nullptr);
  /// Opens the demo workspace (creating it if needed); false with *error as openWorkspace.
  bool openDemo(QString* error = nullptr);
  /// Opens the translation demo workspace (translation true) or the language-model one.
  bool openDemo(bool translation, QString* error = nullptr);
  /// Writes a PNG of each main view into `dir` (for docs/screenshots); returns files.
  QStringList writeScreenshots(const QString& dir, QSize size = QSize(1400, 900));

 protected:
  void closeEvent(QCloseEvent* ev) override;

 private:
  void buildMenus();
  void buildDocks();
  void buildJobBar();
  void rebuildTree();
  void addRecent(const QString& dir);
  void updateRecentMenu();
  void onMessage(int level, const QString& text);
  void newWorkspace();
  void editWorkspace();
  void about();
  void startPipelineJob(const QString& step);

  StudioContext* ctx_;
  QTabWidget* tabs_;
  QString jobOutput_;  ///< the artefact folder of the running pipeline step ("" for other jobs)
  QTreeWidget* tree_;
  QPlainTextEdit* log_;
  QListWidget* issues_;
  QTabWidget* bottomTabs_;
  NeuronInspector* inspector_;
  QProgressBar* progress_;
  QLabel* jobName_;
  QLabel* stage_;
  QLabel* eta_;
  QPushButton* cancel_;
  QMenu* recentMenu_;
};

}  // namespace moefy::views
