#include "views/view_start.h"

#include <QClipboard>
#include <QDateTime>
#include <QDesktopServices>
#include <QDir>
#include <QFileInfo>
#include <QGuiApplication>
#include <QHeaderView>
#include <QLabel>
#include <QPushButton>
#include <QRegularExpression>
#include <QTableWidget>
#include <QUrl>
#include <QVBoxLayout>
#include <map>

#include "analysis/project/python_snippet.h"
#include "views/pipeline.h"
#include "views/style.h"

namespace moefy::views {

namespace {

// An artefact stage: its kind (ArtefactRef::kind), row title, workspace kind
// folder, output name prefix and the GUI step that makes it ("" = CLI only).
struct KindSpec {
  const char* kind;
  const char* title;
  const char* folder;
  const char* prefix;
  const char* step;
  bool optional;  ///< shown only when the workspace has one (front, analysis)
};

const KindSpec kKinds[] = {
    {"recording", "Recordings", "recordings", "rec", "record", false},
    {"partition", "Partitions", "partitions", "part", "split", false},
    {"router", "Routers", "routers", "router", "route", false},
    {"evaluation", "Evaluations", "evaluations", "eval", "eval", false},
    {"export", "Exports", "exports", "moe", "export", false},
    {"front", "Fronts", "fronts", "front", "", true},
    {"analysis", "Analyses", "analyses", "analysis", "", true},
};

// The first DIR/PREFIXn (n = 1, 2, ...) that does not exist.
QString freshOutput(const Workspace& ws, const char* folder, const char* prefix) {
  const QString dir = ws.folder(folder);
  for (int n = 1;; ++n) {
    const QString p = QDir(dir).filePath(QString("%1%2").arg(prefix).arg(n));
    if (!QFileInfo::exists(p)) return QDir::cleanPath(p);
  }
}

// The dialog default of a step's CLI option (the value the GUI would use),
// else `fallback` (the step is not in this build).
QString optionDefault(const QString& stepId, const QString& option, const QString& fallback) {
  const PipelineStep* s = findStep(stepId);
  if (!s || !s->options) return fallback;
  try {
    const QString v = optionField(*s->options, option).def.toString();
    return v.isEmpty() ? fallback : v;
  } catch (const std::exception&) {
    return fallback;
  }
}

QString menuAction(const QString& stepId) {
  const PipelineStep* s = findStep(stepId);
  if (!s) return {};
  QString a = "Pipeline > " + s->title + "...";
  if (!s->shortcut.isEmpty()) a += " (" + s->shortcut + ")";
  return a;
}

}  // namespace

QString shellQuote(const QString& s) {
  static const QRegularExpression safe("^[A-Za-z0-9_./:=+,@%-]+$");
  if (safe.match(s).hasMatch()) return s;
  QString t = s;
  t.replace("'", "'\\''");
  return "'" + t + "'";
}

std::vector<PipelineStage> pipelineStages(const Workspace& ws, const std::vector<ArtefactRef>& artefacts,
                                          const std::function<QString(const QString&)>& routerPartition) {
  std::vector<PipelineStage> out;
  const QString model = ws.model(), corpus = ws.corpus();
  const QString M = shellQuote(model), C = shellQuote(corpus), EC = shellQuote(ws.evalCorpus());
  const bool separate = ws.separateEvalCorpus();

  PipelineStage m;
  m.id = "model";
  m.title = "Model";
  m.present = QFileInfo(model).isDir();
  m.count = m.present ? 1 : 0;
  m.newest = model;
  m.action = "File > Workspace settings...";
  m.command = "moefy inspect " + M;
  if (m.present) m.python = QString::fromStdString(pythonSnippet("model", QDir(model).absolutePath().toStdString()));
  out.push_back(m);
  PipelineStage c;
  c.id = "corpus";
  c.title = "Corpus";
  c.present = QFileInfo::exists(corpus);
  c.count = c.present ? 1 : 0;
  c.newest = corpus;
  c.action = "File > Workspace settings...";
  c.command = "moefy corpus " + C + " --model " + M;
  if (c.present)
    c.python = QString::fromStdString(pythonSnippet("corpus", QFileInfo(corpus).absoluteFilePath().toStdString()));
  out.push_back(c);

  // Per kind: count, unreadable, newest (readable first, then the latest
  // folder modification time, then the last name).
  std::map<QString, const ArtefactRef*> newest;
  std::map<QString, QDateTime> newestTime;
  std::map<QString, int> count, unreadable;
  for (const ArtefactRef& a : artefacts) {
    ++count[a.kind];
    if (!a.readable) ++unreadable[a.kind];
    const QDateTime t = QFileInfo(a.path).lastModified();
    const ArtefactRef* best = newest.count(a.kind) ? newest[a.kind] : nullptr;
    bool better = !best || (a.readable && !best->readable);
    if (best && a.readable == best->readable) {
      const QDateTime bt = newestTime[a.kind];
      better = t > bt || (t == bt && a.name >= best->name);
    }
    if (better) newest[a.kind] = &a, newestTime[a.kind] = t;
  }
  // The newest readable artefact of a kind, quoted, else `placeholder`.
  auto up = [&](const QString& kind, const QString& placeholder) {
    auto it = newest.find(kind);
    return it != newest.end() && it->second->readable ? shellQuote(it->second->path) : placeholder;
  };
  // eval and export pair the newest router with the partition it was trained
  // for (router.json's link), not with the newest partition, which may be
  // another one (and then `moefy eval`/`export` refuse the pair).
  QString ownPartition;
  if (auto it = newest.find("router"); routerPartition && it != newest.end() && it->second->readable) {
    const QString p = routerPartition(it->second->path);
    if (!p.isEmpty() && QFileInfo(p).isDir()) ownPartition = QDir::cleanPath(p);
  }
  auto routerPart = [&] { return ownPartition.isEmpty() ? up("partition", "PART_DIR") : shellQuote(ownPartition); };
  for (const KindSpec& k : kKinds) {
    PipelineStage s;
    s.id = k.kind;
    s.title = k.title;
    s.count = count[k.kind];
    s.unreadable = unreadable[k.kind];
    s.present = s.count > s.unreadable;
    if (k.optional && s.count == 0) continue;
    if (auto it = newest.find(k.kind); it != newest.end()) {
      s.newest = it->second->path;
      s.summary = it->second->summary;
      // Calibrated exports are listed as exports and have their format.
      s.python = QString::fromStdString(pythonSnippet(k.kind, QDir(s.newest).absolutePath().toStdString()));
    }
    if (*k.step) s.action = menuAction(k.step);
    const QString outDir = shellQuote(freshOutput(ws, k.folder, k.prefix));
    const QString id = k.kind;
    if (id == "recording") {
      // As the Record dialog: a workspace without an evaluation corpus of its
      // own evaluates on the held-out split, so it records the training split.
      s.command = "moefy record " + M + " " + C + " --out " + outDir + (separate ? "" : " --split train");
    } else if (id == "partition") {
      s.command = "moefy split " + up("recording", "REC_DIR") + " --method " +
                  optionDefault("split", "method", "coact") + " --experts " + optionDefault("split", "experts", "16") +
                  " --out " + outDir;
    } else if (id == "router") {
      s.command = "moefy route " + M + " " + up("recording", "REC_DIR") + " " + up("partition", "PART_DIR") +
                  " --router " + optionDefault("route", "router", "mlp") + " --out " + outDir;
    } else if (id == "evaluation") {
      // As the Evaluate dialog: a corpus of its own is read whole, else the
      // held-out split (the CLI's default).
      s.command = "moefy eval " + M + " " + EC + " --partition " + routerPart() + " --router " +
                  up("router", "ROUTER_DIR") + (separate ? " --split all" : "") + " --out " + outDir;
    } else if (id == "export") {
      s.command = "moefy export " + M + " " + routerPart() + " " + up("router", "ROUTER_DIR") + " --out " + outDir;
    } else if (id == "front") {
      s.command = "moefy front " + M + " " + C + " " + EC + " --out " + outDir;
    } else if (id == "analysis") {
      s.command = "moefy analyze " + up("export", M) + " " + EC + " --out " + outDir;
    }
    out.push_back(s);
  }
  return out;
}

int firstMissingStage(const std::vector<PipelineStage>& stages) {
  for (size_t i = 0; i < stages.size(); ++i)
    if (!stages[i].present) return static_cast<int>(i);
  return -1;
}

QString demoReportPath(const Workspace& ws) {
  QStringList dirs{ws.dir};
  for (const QString& k : Workspace::kinds()) {
    const QString parent = QFileInfo(ws.folder(k.toStdString())).absolutePath();
    if (!dirs.contains(parent)) dirs << parent;
  }
  for (const char* name : {"report.html", "report.md"})
    for (const QString& d : dirs) {
      const QString p = QDir(d).filePath(name);
      if (QFileInfo(p).isFile()) return QDir::cleanPath(p);
    }
  return {};
}

// ------------------------------------------------------------ StartView

StartView::StartView(StudioContext* ctx, QWidget* parent) : QWidget(parent), ctx_(ctx) {
  setObjectName("startView");
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(kViewMargin, kViewMargin, kViewMargin, kViewMargin);
  title_ = new QLabel(this);
  QFont tf = figureFont(12);
  tf.setBold(true);
  title_->setFont(tf);
  title_->setWordWrap(true);
  // Long paths must not widen the window (1366x768): the labels wrap to the
  // width the layout gives them.
  title_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);
  reportLabel_ = new QLabel(this);
  reportLabel_->setObjectName("startReport");
  reportLabel_->setFont(figureFont(10));
  reportLabel_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);
  reportLabel_->setTextFormat(Qt::RichText);
  connect(reportLabel_, &QLabel::linkActivated, this,
          [](const QString& link) { QDesktopServices::openUrl(QUrl(link)); });
  next_ = new QLabel(this);
  next_->setObjectName("startNextStep");
  next_->setFont(figureFont(10));
  next_->setWordWrap(true);
  next_->setTextFormat(Qt::RichText);
  next_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  next_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);
  table_ = new QTableWidget(this);
  table_->setObjectName("startStages");
  table_->setFont(figureFont(10));
  table_->setColumnCount(6);
  table_->setHorizontalHeaderLabels({"stage", "artefacts", "newest", "CLI command", "", ""});
  table_->verticalHeader()->setVisible(false);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::SingleSelection);
  table_->setWordWrap(false);
  table_->setTextElideMode(Qt::ElideMiddle);
  QHeaderView* h = table_->horizontalHeader();
  h->setSectionResizeMode(0, QHeaderView::ResizeToContents);
  h->setSectionResizeMode(1, QHeaderView::ResizeToContents);
  h->setSectionResizeMode(2, QHeaderView::Stretch);
  h->setSectionResizeMode(3, QHeaderView::Stretch);
  h->setSectionResizeMode(4, QHeaderView::ResizeToContents);
  h->setSectionResizeMode(5, QHeaderView::ResizeToContents);
  lay->addWidget(title_);
  lay->addWidget(reportLabel_);
  lay->addWidget(next_);
  lay->addWidget(table_, 1);
  connect(ctx_, &StudioContext::workspaceChanged, this, &StartView::refresh);
  connect(ctx_, &StudioContext::artefactsChanged, this, &StartView::refresh);
  refresh();
}

QPushButton* StartView::copyButton(int row) const {
  if (row < 0 || row >= table_->rowCount()) return nullptr;
  return qobject_cast<QPushButton*>(table_->cellWidget(row, 4));
}

QPushButton* StartView::pythonButton(int row) const {
  if (row < 0 || row >= table_->rowCount()) return nullptr;
  return qobject_cast<QPushButton*>(table_->cellWidget(row, 5));
}

void StartView::showEvent(QShowEvent* ev) {
  QWidget::showEvent(ev);
  refresh();  // cheap (the scan is the context's; here only stat calls): catches a report written meanwhile
}

void StartView::refresh() {
  table_->clearContents();
  table_->setRowCount(0);
  stages_.clear();
  firstMissing_ = -1;
  report_.clear();
  if (!ctx_->hasWorkspace()) {
    title_->setText(
        "No workspace open: File > New workspace..., File > Open workspace... or File > Open demo workspace.");
    next_->clear();
    next_->hide();
    reportLabel_->clear();
    reportLabel_->hide();
    return;
  }
  const Workspace& ws = ctx_->workspace();
  title_->setText(QString("Pipeline of %1").arg(ws.name));
  title_->setToolTip(ws.dir);
  // The router's partition from the context's router cache (read once per router, shared with the views).
  stages_ = pipelineStages(ws, ctx_->artefacts(), [this](const QString& dir) {
    const auto r = ctx_->router(dir);
    return r ? r->partitionPath : QString();
  });
  firstMissing_ = firstMissingStage(stages_);

  report_ = demoReportPath(ws);
  if (report_.isEmpty()) {
    reportLabel_->clear();
    reportLabel_->hide();
  } else {
    const QString url = QUrl::fromLocalFile(report_).toString();
    reportLabel_->setText(QString("Report of <code>moefy demo</code>: <a href=\"%1\">%2</a>")
                              .arg(url.toHtmlEscaped(), report_.toHtmlEscaped()));
    reportLabel_->setToolTip("Opens " + report_);
    reportLabel_->show();
  }

  if (firstMissing_ < 0) {
    next_->setText("Every pipeline stage has an artefact.");
  } else {
    const PipelineStage& s = stages_[firstMissing_];
    QString how = s.action.isEmpty() ? QString("(no menu entry in this build)") : s.action.toHtmlEscaped();
    next_->setText(QString("<b>Next step: %1</b> &mdash; %2, or on the command line:<br><code>%3</code>")
                       .arg(s.title.toHtmlEscaped(), how, s.command.toHtmlEscaped()));
  }
  next_->show();

  table_->setRowCount(static_cast<int>(stages_.size()));
  for (int r = 0; r < static_cast<int>(stages_.size()); ++r) {
    const PipelineStage& s = stages_[r];
    const bool next = r == firstMissing_;
    auto* stage = new QTableWidgetItem(s.title);
    QFont f = table_->font();
    f.setBold(next);
    stage->setFont(f);
    if (!s.action.isEmpty()) stage->setToolTip("GUI: " + s.action);
    table_->setItem(r, 0, stage);
    QString state;
    if (s.id == "model" || s.id == "corpus")
      state = s.present ? "found" : "missing";
    else if (s.count == 0)
      state = "none";
    else
      state = s.unreadable ? QString("%1 (%2 unreadable)").arg(s.count).arg(s.unreadable) : QString::number(s.count);
    if (next) state += ": next step";
    auto* count = new QTableWidgetItem(state);
    count->setFont(f);
    if (!s.present) count->setForeground(QColor(0xD5, 0x5E, 0x00));  // Okabe-Ito vermillion
    table_->setItem(r, 1, count);
    QString newest;
    if (!s.newest.isEmpty())
      newest = (s.id == "model" || s.id == "corpus") ? s.newest : QFileInfo(s.newest).fileName() + ": " + s.summary;
    auto* nw = new QTableWidgetItem(newest);
    nw->setToolTip(s.newest.isEmpty() ? QString() : s.newest + (s.summary.isEmpty() ? "" : "\n" + s.summary));
    table_->setItem(r, 2, nw);
    auto* cmd = new QTableWidgetItem(s.command);
    cmd->setToolTip(s.command + (s.action.isEmpty() ? QString() : "\nGUI: " + s.action));
    table_->setItem(r, 3, cmd);
    auto* copy = new QPushButton("Copy CLI command", table_);
    copy->setObjectName("copyCommand-" + s.id);
    copy->setToolTip("Copies to the clipboard: " + s.command);
    connect(copy, &QPushButton::clicked, this, [this, command = s.command] {
      QGuiApplication::clipboard()->setText(command);
      ctx_->report(StudioContext::Info, "Copied to the clipboard: " + command);
    });
    table_->setCellWidget(r, 4, copy);
    auto* py = new QPushButton("Copy Python", table_);
    py->setObjectName("copyPython-" + s.id);
    py->setEnabled(!s.python.isEmpty());
    py->setToolTip(s.python.isEmpty() ? QString("No %1 to load yet").arg(s.title.toLower())
                                      : "Copies a Python snippet (json + numpy) that loads " + s.newest);
    connect(py, &QPushButton::clicked, this, [this, python = s.python, path = s.newest] {
      QGuiApplication::clipboard()->setText(python);
      ctx_->report(StudioContext::Info, "Copied to the clipboard: a Python snippet that loads " + path);
    });
    table_->setCellWidget(r, 5, py);
  }
  table_->resizeRowsToContents();
}

}  // namespace moefy::views
