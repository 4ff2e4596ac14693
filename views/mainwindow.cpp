#include "views/mainwindow.h"

#include "views/qcp.h"
#include <metis.h>
#include <torch/version.h>

#include <QApplication>
#include <QCloseEvent>
#include <QCoreApplication>
#include <QDateTime>
#include <QDialogButtonBox>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QScreen>
#include <QSettings>
#include <QStandardPaths>
#include <QStatusBar>
#include <QStyle>
#include <QToolButton>

#include "views/figure.h"
#include "views/jobrunner.h"
#include "views/pipeline.h"
#include "views/view_corpus.h"
#include "views/view_neuron.h"
#include "views/view_start.h"
#include "views/views.h"

namespace moefy::views {

QString findDataDir() {
  QStringList candidates;
  QString env = qEnvironmentVariable("MOEFY_DATA_DIR");
  if (!env.isEmpty()) candidates << env;
  QString app = QCoreApplication::applicationDirPath();
  candidates << app + "/../share/moefy-studio/data" << app + "/../data" << app + "/../../data"
             << QStringLiteral(MOEFY_SOURCE_DIR) + "/data";
  for (const QString& c : candidates)
    if (QFileInfo(c).isDir()) return QDir(c).absolutePath();
  return QStringLiteral(MOEFY_SOURCE_DIR) + "/data";
}

namespace {

// A bundled demo: its model and corpora (under the data folder) and where its
// `moefy demo` output and workspaces live.
struct DemoSpec {
  QString name;        // the workspace name
  QString model;       // relative to the data folder
  QString corpus;      // the recording corpus
  QString evalCorpus;  // the evaluation corpus
  QString dirName;     // data/<dirName>-workspace (bundled), data/<dirName> (demo output), and the user copies
};

DemoSpec languageDemo() {
  return {"Demo: brown-relu on the Brown corpus", "models/brown-relu", "corpus/brown/train", "corpus/brown/heldout",
          "demo"};
}

DemoSpec translationDemo() {
  return {"Demo: bible-t5, English -> Spanish translation", "models/bible-t5", "corpus/bible-en-es/train.tsv",
          "corpus/bible-en-es/test.tsv", "demo-translation"};
}

QString specWorkspaceDir(const DemoSpec& spec, QString* error) {
  const QString data = findDataDir();
  const QString bundled = data + "/" + spec.dirName + "-workspace";
  if (QFileInfo::exists(bundled + "/workspace.json")) return bundled;
  QString base = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
  if (base.isEmpty()) base = QDir::homePath() + "/.local/share/moefy-studio";
  // The output of `moefy demo [--translation] --out data/<dirName>` (recording/,
  // partitions/, routers/, eval/, export/) without a workspace.json: describe it
  // with one in the user's data folder whose artefact folders point into it.
  for (const QString& demoOut : {data + "/" + spec.dirName, bundled}) {
    if (!QFileInfo::exists(demoOut + "/recording/manifest.json")) continue;
    const QString dir = base + "/" + spec.dirName + "-output-workspace";
    try {
      // The demo records on the training part and evaluates on the held-out
      // (or test) part: the workspace says so (training corpus + evaluation
      // corpus), so the studio's steps read the same data.
      Workspace ws = Workspace::create(dir, spec.name, data + "/" + spec.model, data + "/" + spec.corpus);
      ws.evalCorpusPath = data + "/" + spec.evalCorpus;
      ws.folders = {{"recordings", demoOut + "/recording"},  {"partitions", demoOut + "/partitions"},
                    {"routers", demoOut + "/routers"},       {"evaluations", demoOut + "/eval"},
                    {"fronts", demoOut + "/front"},          {"exports", demoOut + "/export"},
                    {"calibrated", demoOut + "/calibrated"}, {"figures", demoOut + "/figures"}};
      ws.save();
      return dir;
    } catch (const std::exception& e) {
      if (error) *error = QString("Cannot describe the demo output %1 as a workspace: %2").arg(demoOut, e.what());
      return {};
    }
  }
  // No bundled demo workspace (yet): make one in the user's data folder that
  // points at the bundled model and corpus; the views show empty states until
  // the pipeline has run.
  const QString dir = base + "/" + spec.dirName + "-workspace";
  if (QFileInfo::exists(dir + "/workspace.json")) return dir;
  try {
    Workspace ws = Workspace::create(dir, spec.name, data + "/" + spec.model, data + "/" + spec.corpus);
    ws.evalCorpusPath = data + "/" + spec.evalCorpus;
    ws.save();
  } catch (const std::exception& e) {
    if (error) *error = QString("Cannot create the demo workspace in %1: %2").arg(dir, e.what());
    return {};
  }
  return dir;
}

}  // namespace

QString demoWorkspaceDir(QString* error) { return demoWorkspaceDir(false, error); }

QString demoWorkspaceDir(bool translation, QString* error) {
  return specWorkspaceDir(translation ? translationDemo() : languageDemo(), error);
}

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent), ctx_(new StudioContext(this)) {
  setWindowTitle("MoEfy Studio");
  setWindowIcon(QIcon(":/moefy-studio.svg"));
  setObjectName("MoEfyStudioMain");
  tabs_ = new QTabWidget(this);
  tabs_->setObjectName("viewTabs");
  tabs_->setDocumentMode(true);
  tabs_->addTab(new StartView(ctx_), "Start");  // first: the pipeline state and the next step
  tabs_->addTab(new ModelView(ctx_), "Model");
  tabs_->addTab(new CorpusView(ctx_), "Corpus");
  tabs_->addTab(new SparsityView(ctx_), "Sparsity");
  tabs_->addTab(new CoactView(ctx_), "Co-activation");
  tabs_->addTab(new ExpertGraphView(ctx_), "Expert graph");
  tabs_->addTab(new PartitionView(ctx_), "Partitions");
  tabs_->addTab(new RouterView(ctx_), "Router");
  tabs_->addTab(new NeuronView(ctx_), "Neuron");  // issue 20: neuron and expert pages
  tabs_->addTab(new EvalView(ctx_), "Evaluation");
  tabs_->addTab(new CompareView(ctx_), "Compare");  // every evaluation on one axis (issue 20)
  tabs_->addTab(new FrontView(ctx_), "Front");
  tabs_->addTab(new ExpertsView(ctx_), "Experts");
  setCentralWidget(tabs_);
  connect(ctx_, &StudioContext::message, this, &MainWindow::onMessage);
  connect(ctx_, &StudioContext::workspaceChanged, this, [this] {
    rebuildTree();
    setWindowTitle(QString("%1 - MoEfy Studio").arg(ctx_->workspace().name));
  });
  connect(ctx_, &StudioContext::artefactsChanged, this, &MainWindow::rebuildTree);
  connect(ctx_, &StudioContext::viewRequested, this, [this](const QString& title) {
    for (int i = 0; i < tabs_->count(); ++i)
      if (tabs_->tabText(i) == title) tabs_->setCurrentIndex(i);
  });
  buildDocks();
  buildJobBar();
  buildMenus();
  QSettings s;
  if (!restoreGeometry(s.value("window/geometry").toByteArray())) {
    // 1400x900, or less on a smaller screen (a 1366x768 laptop).
    QSize size(1400, 900);
    if (QScreen* screen = QGuiApplication::primaryScreen()) size = size.boundedTo(screen->availableGeometry().size());
    resize(size);
  }
  restoreState(s.value("window/state").toByteArray());
  // The current tab by name (an index would shift when tabs are added; the
  // Start page when none was saved or the name is gone).
  const QString tab = s.value("window/tabName").toString();
  for (int i = 0; i < tabs_->count(); ++i)
    if (tabs_->tabText(i) == tab) tabs_->setCurrentIndex(i);
}

MainWindow::~MainWindow() {
  // Join every worker before the views (their continuations' owners) go.
  ctx_->shutdown();
}

QList<QWidget*> MainWindow::views() const {
  QList<QWidget*> v;
  for (int i = 0; i < tabs_->count(); ++i) v << tabs_->widget(i);
  return v;
}

FigureView* MainWindow::figureView(int tab) const { return qobject_cast<FigureView*>(tabs_->widget(tab)); }

void MainWindow::closeEvent(QCloseEvent* ev) {
  if (ctx_->jobs()->busy()) {
    auto r = QMessageBox::question(this, "Job running", QString("'%1' is still running. Cancel it and quit?").arg(ctx_->jobs()->currentName()));
    if (r != QMessageBox::Yes) {
      ev->ignore();
      return;
    }
    ctx_->jobs()->cancel();
    ctx_->jobs()->wait(5000);
  }
  ctx_->tasks()->cancelAll();  // loads and computations of the views: their results are not needed any more
  QSettings s;
  s.setValue("window/geometry", saveGeometry());
  s.setValue("window/state", saveState());
  s.setValue("window/tabName", tabs_->tabText(tabs_->currentIndex()));
  QMainWindow::closeEvent(ev);
}

void MainWindow::buildDocks() {
  auto* treeDock = new QDockWidget("Workspace", this);
  treeDock->setObjectName("workspaceDock");
  tree_ = new QTreeWidget(treeDock);
  tree_->setObjectName("workspaceTree");
  tree_->setHeaderHidden(true);
  tree_->setMinimumWidth(220);
  treeDock->setWidget(tree_);
  addDockWidget(Qt::LeftDockWidgetArea, treeDock);
  connect(tree_, &QTreeWidget::itemClicked, this, [this](QTreeWidgetItem* it) {
    QString kind = it->data(0, Qt::UserRole).toString(), path = it->data(0, Qt::UserRole + 1).toString();
    if (kind.isEmpty()) return;
    static const std::map<QString, QString> tabFor = {
        {"recording", "Sparsity"}, {"partition", "Co-activation"}, {"router", "Router"}, {"evaluation", "Evaluation"},
        {"front", "Front"},        {"analysis", "Experts"},        {"model", "Model"},   {"corpus", "Corpus"}};
    if (!path.isEmpty() && kind != "model" && kind != "corpus") ctx_->setCurrent(kind, path);
    auto t = tabFor.find(kind);
    if (t != tabFor.end())
      for (int i = 0; i < tabs_->count(); ++i)
        if (tabs_->tabText(i) == t->second) tabs_->setCurrentIndex(i);
  });

  auto* logDock = new QDockWidget("Log and issues", this);
  logDock->setObjectName("logDock");
  bottomTabs_ = new QTabWidget(logDock);
  log_ = new QPlainTextEdit(bottomTabs_);
  log_->setReadOnly(true);
  log_->setObjectName("logText");
  log_->setMaximumBlockCount(5000);
  issues_ = new QListWidget(bottomTabs_);
  issues_->setObjectName("issuesList");
  issues_->setWordWrap(true);
  bottomTabs_->addTab(issues_, "Issues");
  bottomTabs_->addTab(log_, "Log");
  logDock->setWidget(bottomTabs_);
  addDockWidget(Qt::BottomDockWidgetArea, logDock);

  auto* inspDock = new QDockWidget("Neuron inspector", this);
  inspDock->setObjectName("inspectorDock");
  inspector_ = new NeuronInspector(ctx_, inspDock);
  // Wide enough for its tables' numbers at 1366x768 (resizeDocks below only
  // asks; before the first show the central widget's minimum can win).
  inspector_->setMinimumWidth(260);
  inspDock->setWidget(inspector_);
  addDockWidget(Qt::RightDockWidgetArea, inspDock);
  resizeDocks({logDock}, {150}, Qt::Vertical);
  resizeDocks({treeDock, inspDock}, {240, 280}, Qt::Horizontal);
}

void MainWindow::buildJobBar() {
  auto* bar = new QWidget(this);
  bar->setObjectName("jobBar");
  auto* lay = new QHBoxLayout(bar);
  lay->setContentsMargins(4, 0, 4, 0);
  jobName_ = new QLabel("No job running", bar);
  stage_ = new QLabel(bar);
  stage_->setObjectName("jobStage");
  progress_ = new QProgressBar(bar);
  progress_->setObjectName("jobProgress");
  progress_->setRange(0, 1000);
  progress_->setValue(0);
  progress_->setTextVisible(true);
  progress_->setFormat("%p%");
  progress_->setMaximumWidth(300);
  eta_ = new QLabel(bar);
  cancel_ = new QPushButton("Cancel", bar);
  cancel_->setObjectName("jobCancel");
  cancel_->setEnabled(false);
  cancel_->setShortcut(QKeySequence("Ctrl+."));
  cancel_->setToolTip("Cancel the running job (Ctrl+.)");
  lay->addWidget(jobName_);
  lay->addWidget(stage_);
  lay->addWidget(progress_);
  lay->addWidget(eta_);
  lay->addWidget(cancel_);
  statusBar()->addPermanentWidget(bar, 1);
  JobRunner* jobs = ctx_->jobs();
  connect(cancel_, &QPushButton::clicked, this, [this] {
    ctx_->jobs()->cancel();
    stage_->setText("cancelling...");
  });
  connect(jobs, &JobRunner::started, this, [this](const QString& name) {
    jobOutput_.clear();  // set by runStep() for pipeline steps, after start()
    jobName_->setText("<b>" + name + "</b>");
    stage_->setText("starting");
    progress_->setValue(0);
    eta_->clear();
    cancel_->setEnabled(true);
    onMessage(StudioContext::Info, "Started " + name);
  });
  connect(jobs, &JobRunner::progress, this, [this](const QString& stage, double f, double eta) {
    stage_->setText(stage);
    progress_->setValue(static_cast<int>(f * 1000));
    if (eta >= 0) eta_->setText(eta < 60 ? QString("ETA %1 s").arg(std::ceil(eta)) : QString("ETA %1 min").arg(eta / 60, 0, 'f', 1));
    else eta_->clear();
  });
  connect(jobs, &JobRunner::logLine, this, [this](const QString& l) { onMessage(-1, l); });
  connect(jobs, &JobRunner::finished, this, [this](const QString& name, bool ok, bool cancelled, const QString& err) {
    cancel_->setEnabled(false);
    eta_->clear();
    if (ok) {
      jobName_->setText(name + ": done");
      progress_->setValue(1000);
      stage_->clear();
      const QString what = jobOutput_.isEmpty() ? QString("its output") : jobOutput_;
      if (ctx_->jobs()->cancelCameLate())
        onMessage(StudioContext::Warning,
                  name + " had already finished when the cancel arrived: " + what +
                      " was written completely and is kept (delete it from the workspace if unwanted)");
      else
        onMessage(StudioContext::Info, name + " finished");
    } else if (cancelled) {
      jobName_->setText(name + ": cancelled");
      stage_->clear();
      // Writes are atomic: either the folder is untouched or it never appeared.
      if (!jobOutput_.isEmpty() && QFileInfo::exists(jobOutput_))
        onMessage(StudioContext::Warning, name + " was cancelled; " + jobOutput_ + " is unchanged (no partial files)");
      else
        onMessage(StudioContext::Warning, name + " was cancelled; nothing was written");
    } else {
      jobName_->setText(name + ": failed");
      stage_->clear();
      onMessage(StudioContext::Error, name + " failed: " + err);
    }
    ctx_->rescan();
  });
}

void MainWindow::onMessage(int level, const QString& text) {
  QString stamp = QDateTime::currentDateTime().toString("HH:mm:ss");
  static const char* names[] = {"info", "warning", "error"};
  log_->appendPlainText(QString("%1 %2 %3").arg(stamp, level < 0 ? "" : names[level], text));
  if (level == StudioContext::Warning || level == StudioContext::Error) {
    auto* it = new QListWidgetItem(style()->standardIcon(level == StudioContext::Error ? QStyle::SP_MessageBoxCritical
                                                                                        : QStyle::SP_MessageBoxWarning),
                                   QString("%1  %2").arg(stamp, text), issues_);
    issues_->scrollToItem(it);
    statusBar()->showMessage(text, 8000);
  }
}

void MainWindow::rebuildTree() {
  tree_->clear();
  if (!ctx_->hasWorkspace()) return;
  const Workspace& ws = ctx_->workspace();
  auto* root = new QTreeWidgetItem(tree_, {ws.name});
  root->setToolTip(0, ws.dir);
  auto leaf = [](QTreeWidgetItem* parent, const QString& text, const QString& kind, const QString& path, const QString& tip) {
    auto* it = new QTreeWidgetItem(parent, {text});
    it->setData(0, Qt::UserRole, kind);
    it->setData(0, Qt::UserRole + 1, path);
    it->setToolTip(0, tip);
    return it;
  };
  auto* model = leaf(root, "Model: " + QFileInfo(ws.model()).fileName(), "model", ws.model(), ws.model());
  if (!QFileInfo(ws.model()).isDir()) model->setForeground(0, Qt::red), model->setToolTip(0, ws.model() + " (missing)");
  auto* corpus = leaf(root, "Corpus: " + QFileInfo(ws.corpus()).fileName(), "corpus", ws.corpus(), ws.corpus());
  if (!QFileInfo::exists(ws.corpus())) corpus->setForeground(0, Qt::red), corpus->setToolTip(0, ws.corpus() + " (missing)");
  const std::pair<QString, QString> groups[] = {
      {"recording", "Recordings"}, {"partition", "Partitions"}, {"router", "Routers"}, {"evaluation", "Evaluations"},
      {"front", "Fronts"},         {"analysis", "Analyses"},    {"export", "Exports"}};
  for (const auto& [kind, title] : groups) {
    int n = 0;
    auto* g = new QTreeWidgetItem(root, {title});
    for (const auto& a : ctx_->artefacts())
      if (a.kind == kind) leaf(g, a.name, kind, a.path, a.summary + "\n" + a.path), ++n;
    g->setText(0, QString("%1 (%2)").arg(title).arg(n));
  }
  tree_->expandAll();
}

void MainWindow::addRecent(const QString& dir) {
  QSettings s;
  QStringList r = s.value("recent").toStringList();
  r.removeAll(dir);
  r.prepend(dir);
  while (r.size() > 8) r.removeLast();
  s.setValue("recent", r);
  s.setValue("lastWorkspace", dir);
  updateRecentMenu();
}

void MainWindow::updateRecentMenu() {
  recentMenu_->clear();
  for (const QString& d : QSettings().value("recent").toStringList())
    recentMenu_->addAction(d, this, [this, d] { openWorkspace(d); });
  recentMenu_->setEnabled(!recentMenu_->isEmpty());
}

bool MainWindow::openWorkspace(const QString& dir, QString* error) {
  if (!ctx_->openWorkspace(dir, error)) return false;
  addRecent(ctx_->workspace().dir);
  if (!QFileInfo(ctx_->workspace().model()).isDir())
    onMessage(StudioContext::Warning, "The workspace's model folder is missing: " + ctx_->workspace().model());
  return true;
}

bool MainWindow::openDemo(QString* error) { return openDemo(false, error); }

bool MainWindow::openDemo(bool translation, QString* error) {
  QString err;
  QString dir = demoWorkspaceDir(translation, &err);
  if (dir.isEmpty()) {
    onMessage(StudioContext::Error, err);
    if (error) *error = err;
    return false;
  }
  return openWorkspace(dir, error);
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("&New workspace...", QKeySequence::New, this, &MainWindow::newWorkspace);
  file->addAction("&Open workspace...", QKeySequence::Open, this, [this] {
    QString d = QFileDialog::getExistingDirectory(this, "Open workspace (folder with workspace.json)");
    if (!d.isEmpty()) openWorkspace(d);
  });
  recentMenu_ = file->addMenu("Open &recent");
  updateRecentMenu();
  file->addAction("Open &demo workspace", this, [this] { openDemo(); });
  file->addAction("Open &translation demo workspace", this, [this] { openDemo(true); });
  file->addAction("&Save workspace", QKeySequence::Save, this, [this] {
    if (!ctx_->hasWorkspace()) return;
    try {
      ctx_->workspace().save();
      onMessage(StudioContext::Info, "Saved " + ctx_->workspace().dir + "/workspace.json");
    } catch (const std::exception& e) {
      onMessage(StudioContext::Error, QString("Cannot save the workspace: %1").arg(e.what()));
    }
  });
  file->addAction("Workspace &settings...", this, &MainWindow::editWorkspace);
  file->addAction("Re&scan artefacts", QKeySequence::Refresh, ctx_, &StudioContext::rescan);
  file->addSeparator();
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  QMenu* pipe = menuBar()->addMenu("&Pipeline");
  for (const PipelineStep& step : pipelineSteps()) {
    QAction* a = pipe->addAction(step.title + "...", this, [this, id = step.id] { startPipelineJob(id); });
    if (!step.shortcut.isEmpty()) a->setShortcut(QKeySequence(step.shortcut));
    a->setToolTip(step.help);
  }
  if (pipelineSteps().empty()) pipe->addAction("(no pipeline steps in this build)")->setEnabled(false);

  QMenu* view = menuBar()->addMenu("&View");
  for (int i = 0; i < tabs_->count(); ++i) {
    QAction* a = view->addAction(tabs_->tabText(i), this, [this, i] { tabs_->setCurrentIndex(i); });
    if (i < 9) a->setShortcut(QKeySequence(QString("Ctrl+%1").arg(i + 1)));
  }
  view->addSeparator();
  for (QDockWidget* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());
  view->addAction("Next view", QKeySequence::NextChild, this, [this] { tabs_->setCurrentIndex((tabs_->currentIndex() + 1) % tabs_->count()); });

  QMenu* help = menuBar()->addMenu("&Help");
  help->addAction("&About MoEfy Studio", this, &MainWindow::about);
  help->addAction("About &Qt", qApp, &QApplication::aboutQt);
}

void MainWindow::about() {
  QString text = QString("<h3>MoEfy Studio %1</h3><p>Turning Transformer FFNs into Mixtures of Experts: record, split, "
                         "route, evaluate, export.</p><table>"
                         "<tr><td>Qt</td><td>%2 (built with %3)</td></tr>"
                         "<tr><td>libtorch</td><td>%4</td></tr>"
                         "<tr><td>METIS</td><td>%5.%6.%7</td></tr>"
                         "<tr><td>QCustomPlot</td><td>%8</td></tr></table>")
                     .arg(MOEFY_VERSION, qVersion(), QT_VERSION_STR, TORCH_VERSION)
                     .arg(METIS_VER_MAJOR).arg(METIS_VER_MINOR).arg(METIS_VER_SUBMINOR)
                     .arg(QCUSTOMPLOT_VERSION_STR);
  QMessageBox box(this);
  box.setWindowTitle("About MoEfy Studio");
  box.setIconPixmap(QIcon(":/moefy-studio.svg").pixmap(64, 64));
  box.setText(text);
  box.setObjectName("aboutBox");
  box.exec();
}

namespace {
struct WorkspaceForm {
  QLineEdit* dir = nullptr;
  QLineEdit* name;
  QLineEdit* model;
  QLineEdit* corpus;
  QLineEdit* evalCorpus;
};
QWidget* browseRow(QWidget* parent, QLineEdit* edit, bool dir) {
  auto* w = new QWidget(parent);
  auto* l = new QHBoxLayout(w);
  l->setContentsMargins(0, 0, 0, 0);
  l->addWidget(edit, 1);
  auto* b = new QToolButton(w);
  b->setText("...");
  l->addWidget(b);
  QObject::connect(b, &QToolButton::clicked, w, [w, edit, dir] {
    QString p = dir ? QFileDialog::getExistingDirectory(w, "Choose a folder", edit->text())
                    : QFileDialog::getOpenFileName(w, "Choose a file", edit->text());
    if (!p.isEmpty()) edit->setText(p);
  });
  return w;
}
}  // namespace

void MainWindow::newWorkspace() {
  QDialog d(this);
  d.setWindowTitle("New workspace");
  auto* form = new QFormLayout(&d);
  WorkspaceForm f;
  f.dir = new QLineEdit(QDir::homePath() + "/moefy-workspace", &d);
  f.name = new QLineEdit("My workspace", &d);
  f.model = new QLineEdit(findDataDir() + "/models/brown-relu", &d);
  f.corpus = new QLineEdit(findDataDir() + "/corpus/brown/train", &d);
  f.evalCorpus = new QLineEdit(findDataDir() + "/corpus/brown/heldout", &d);
  f.evalCorpus->setToolTip(
      "The corpus evaluations read whole; leave empty to evaluate on the training corpus's held-out split");
  form->addRow("Folder:", browseRow(&d, f.dir, true));
  form->addRow("Name:", f.name);
  form->addRow("Model folder:", browseRow(&d, f.model, true));
  form->addRow("Training corpus (.txt, .jsonl or folder):", browseRow(&d, f.corpus, true));
  form->addRow("Evaluation corpus (empty = held-out split):", browseRow(&d, f.evalCorpus, true));
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
  form->addRow(bb);
  connect(bb, &QDialogButtonBox::accepted, &d, &QDialog::accept);
  connect(bb, &QDialogButtonBox::rejected, &d, &QDialog::reject);
  if (d.exec() != QDialog::Accepted) return;
  if (QFileInfo::exists(f.dir->text() + "/workspace.json")) {
    onMessage(StudioContext::Error, f.dir->text() + " already holds a workspace; open it instead");
    return;
  }
  try {
    Workspace ws = Workspace::create(f.dir->text(), f.name->text(), f.model->text(), f.corpus->text());
    ws.evalCorpusPath = f.evalCorpus->text().trimmed();
    ws.save();
    openWorkspace(ws.dir);
  } catch (const std::exception& e) {
    onMessage(StudioContext::Error, QString("Cannot create the workspace: %1").arg(e.what()));
  }
}

void MainWindow::editWorkspace() {
  if (!ctx_->hasWorkspace()) return;
  Workspace ws = ctx_->workspace();
  QDialog d(this);
  d.setWindowTitle("Workspace settings");
  auto* form = new QFormLayout(&d);
  WorkspaceForm f;
  f.name = new QLineEdit(ws.name, &d);
  f.model = new QLineEdit(ws.modelPath, &d);
  f.corpus = new QLineEdit(ws.corpusPath, &d);
  f.evalCorpus = new QLineEdit(ws.evalCorpusPath, &d);
  f.evalCorpus->setToolTip(
      "The corpus evaluations read whole; leave empty to evaluate on the training corpus's held-out split");
  form->addRow("Name:", f.name);
  form->addRow("Model folder:", browseRow(&d, f.model, true));
  form->addRow("Training corpus:", browseRow(&d, f.corpus, true));
  form->addRow("Evaluation corpus (empty = held-out split):", browseRow(&d, f.evalCorpus, true));
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
  form->addRow(bb);
  connect(bb, &QDialogButtonBox::accepted, &d, &QDialog::accept);
  connect(bb, &QDialogButtonBox::rejected, &d, &QDialog::reject);
  if (d.exec() != QDialog::Accepted) return;
  ws.name = f.name->text();
  ws.modelPath = f.model->text();
  ws.corpusPath = f.corpus->text();
  ws.evalCorpusPath = f.evalCorpus->text().trimmed();
  try {
    ws.save();
    ctx_->setWorkspace(ws);
  } catch (const std::exception& e) {
    onMessage(StudioContext::Error, QString("Cannot save the workspace: %1").arg(e.what()));
  }
}

void MainWindow::startPipelineJob(const QString& id) {
  if (!ctx_->hasWorkspace()) {
    onMessage(StudioContext::Error, "Open or create a workspace first");
    return;
  }
  if (ctx_->jobs()->busy()) {
    onMessage(StudioContext::Warning, QString("'%1' is still running; wait for it or cancel it").arg(ctx_->jobs()->currentName()));
    return;
  }
  for (const PipelineStep& step : pipelineSteps())
    if (step.id == id) {
      PipelineJob job;
      QString err;
      if (!runStepDialog(step, this, ctx_, &job, &err)) {
        if (!err.isEmpty()) onMessage(StudioContext::Error, err);
        return;
      }
      if (ctx_->jobs()->start(job.name, job.fn)) jobOutput_ = job.output;
    }
}

QStringList MainWindow::writeScreenshots(const QString& dir, QSize size) {
  QDir().mkpath(dir);
  resize(size);
  show();
  QStringList files;
  for (int i = 0; i < tabs_->count(); ++i) {
    tabs_->setCurrentIndex(i);
    for (int k = 0; k < 20; ++k) QApplication::processEvents();
    // Let background loads and layouts finish (bounded).
    QElapsedTimer t;
    t.start();
    while (t.elapsed() < 4000) {
      QApplication::processEvents(QEventLoop::AllEvents, 50);
      auto* mv = qobject_cast<ModelView*>(tabs_->widget(i));
      auto* gv = qobject_cast<ExpertGraphView*>(tabs_->widget(i));
      auto* cv = qobject_cast<CorpusView*>(tabs_->widget(i));
      auto* nv = qobject_cast<NeuronView*>(tabs_->widget(i));
      if ((!mv || !mv->loading()) && (!gv || !gv->layoutRunning()) && (!cv || !cv->loading()) && (!nv || !nv->busy()) &&
          t.elapsed() > 300)
        break;
    }
    for (QCustomPlot* p : tabs_->widget(i)->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
    QApplication::processEvents();
    QString name = tabs_->tabText(i).toLower().replace(' ', '-');
    // Numbered by tab index: the Start page (tab 0) is 00-start.png, so the
    // other views keep their names (01-model.png, ...).
    QString path = QDir(dir).filePath(QString("%1-%2.png").arg(i, 2, 10, QChar('0')).arg(name));
    if (grab().save(path)) files << path;
  }
  return files;
}

}  // namespace moefy::views
