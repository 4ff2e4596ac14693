// GUI tests: drive the real widgets offscreen over a synthetic workspace
// (scripts/gui/make_fake_workspace.py writes it in the formats of docs/formats.md).
#include "views/qcp.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QDateTime>
#include <QDialog>
#include <QLineEdit>
#include <QMenuBar>
#include <QPushButton>
#include <QScrollBar>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QSvgRenderer>
#include <QTemporaryDir>
#include <QUrl>
#include <QXmlStreamReader>
#include <QtTest>
#include <chrono>
#include <filesystem>

#include <sstream>

#include "analysis/checkpoint/loader.h"
#include "analysis/text/tokenizer.h"
#include "gui_fixture.h"
#include "testutil.h"
#include "views/artefacts.h"
#include "views/figure.h"
#include "views/jobrunner.h"
#include "views/mainwindow.h"
#include "views/pipeline.h"
#include "views/view_corpus.h"
#include "views/view_start.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;

namespace {
QByteArray head(const QString& path, int n) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) return {};
  return f.read(n);
}
bool svgValid(const QString& path, QString* why) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) return *why = "cannot open", false;
  QXmlStreamReader xml(&f);
  int elements = 0;
  while (!xml.atEnd()) {
    if (xml.readNext() == QXmlStreamReader::StartElement) ++elements;
  }
  if (xml.hasError()) return *why = xml.errorString(), false;
  QSvgRenderer r(path);
  if (!r.isValid()) return *why = "QSvgRenderer rejects it", false;
  if (elements < 10) return *why = QString("only %1 elements").arg(elements), false;
  return true;
}
template <typename T>
T* viewOf(MainWindow& w) {
  for (QWidget* v : w.views())
    if (auto* t = qobject_cast<T*>(v)) return t;
  return nullptr;
}
}  // namespace

class TestStudio : public QObject {
  Q_OBJECT
  QString ws_;

  /// A copy of the shared workspace's workspace.json in tmp/ws, pointing at the
  /// shared model and corpus, so that new artefacts stay out of other tests.
  QString privateWorkspace(QTemporaryDir& tmp) {
    const QString ws = tmp.filePath("ws");
    if (!QDir().mkpath(ws) || !QFile::copy(ws_ + "/workspace.json", ws + "/workspace.json")) return {};
    Workspace w0 = Workspace::load(ws);
    w0.modelPath = ws_ + "/model";
    w0.corpusPath = ws_ + "/corpus";
    w0.save();
    return ws;
  }

 private Q_SLOTS:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);  // QSettings and app data go to a test location
    QString err;
    ws_ = test::fakeWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  void demoWorkspaceOpensWithEmptyStates() {
    // No bundled demo in this data folder: the app creates one pointing at the
    // bundled model/corpus and every view shows an empty state, no crash.
    QTemporaryDir data;
    qputenv("MOEFY_DATA_DIR", data.path().toUtf8());
    QDir(QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) + "/demo-workspace").removeRecursively();
    {
      MainWindow w;
      w.resize(1200, 800);
      w.show();
      QVERIFY(w.openDemo());
      QVERIFY(w.context()->hasWorkspace());
      QCOMPARE(w.context()->workspace().model(), QDir::cleanPath(data.path() + "/models/brown-relu"));
      for (int i = 0; i < w.tabs()->count(); ++i) {
        w.tabs()->setCurrentIndex(i);
        QApplication::processEvents();
        if (FigureView* f = w.figureView(i)) QVERIFY2(!f->hasData(), qPrintable(w.tabs()->tabText(i)));
      }
      // The missing model is reported in the issues dock, readable.
      bool found = false;
      for (int i = 0; i < w.issues()->count(); ++i) found |= w.issues()->item(i)->text().contains("brown-relu");
      QVERIFY(found);
    }
    // The second entry, the translation demo (File > Open translation demo
    // workspace): the bundled T5 and the Bible corpus, recorded on train.tsv and
    // evaluated on test.tsv.
    QDir(QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) + "/demo-translation-workspace")
        .removeRecursively();
    {
      MainWindow w;
      w.resize(1366, 768);
      w.show();
      QVERIFY(w.openDemo(true));
      QCOMPARE(w.context()->workspace().model(), QDir::cleanPath(data.path() + "/models/bible-t5"));
      const QString name = w.context()->workspace().dir;
      QVERIFY2(name.endsWith("demo-translation-workspace"), qPrintable(name));
      for (int i = 0; i < w.tabs()->count(); ++i) {
        w.tabs()->setCurrentIndex(i);
        QApplication::processEvents();
      }
    }
    qunsetenv("MOEFY_DATA_DIR");
  }

  void openWorkspaceAndSwitchEveryView() {
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QCOMPARE(w.context()->paths("recording").size(), 1);
    QCOMPARE(w.context()->paths("partition").size(), 4);
    QCOMPARE(w.context()->paths("router").size(), 2);
    for (int i = 0; i < w.tabs()->count(); ++i) {
      w.tabs()->setCurrentIndex(i);
      QApplication::processEvents();
      auto* mv = qobject_cast<ModelView*>(w.tabs()->widget(i));
      if (mv) QTRY_VERIFY_WITH_TIMEOUT(!mv->loading(), 20000);
      auto* cv = qobject_cast<CorpusView*>(w.tabs()->widget(i));
      if (cv) QTRY_VERIFY_WITH_TIMEOUT(!cv->loading(), 30000);
      auto* gv = qobject_cast<ExpertGraphView*>(w.tabs()->widget(i));
      if (gv) QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning(), 20000);
      QApplication::processEvents();
      FigureView* f = w.figureView(i);
      if (!f) {  // the Start page (no figure; startPageShowsPipelineState)
        QVERIFY(qobject_cast<StartView*>(w.tabs()->widget(i)));
        continue;
      }
      QVERIFY2(f->hasData(), qPrintable(w.tabs()->tabText(i) + " shows an empty state on a full workspace"));
      QVERIFY2(f->csvData().count('\n') > 1, qPrintable(w.tabs()->tabText(i)));
    }
    QCOMPARE(w.issues()->count(), 0);
  }

  // Issue 20: the Start tab comes first and shows the pipeline state of the
  // workspace: the Project scan's counts and newest summaries, the first
  // missing stage's menu entry and CLI command (filled in with the
  // workspace's model, corpus and newest upstream artefacts), Copy CLI
  // command, the demo report's link; it fits a 1366x768 screen.
  void startPageShowsPipelineState() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QCOMPARE(w.tabs()->tabText(0), QString("Start"));
    auto* sv = qobject_cast<StartView*>(w.tabs()->widget(0));
    QVERIFY(sv);
    w.tabs()->setCurrentIndex(0);
    QApplication::processEvents();
    StudioContext* ctx = w.context();
    // The newest artefact of a kind as the page defines it (latest folder
    // modification time, on a tie the last name).
    auto newestOf = [ctx](const QString& kind) {
      QString best;
      QDateTime bt;
      for (const QString& p : ctx->paths(kind)) {
        const QDateTime t = QFileInfo(p).lastModified();
        if (best.isEmpty() || t > bt || (t == bt && QFileInfo(p).fileName() >= QFileInfo(best).fileName()))
          best = p, bt = t;
      }
      return best;
    };
    auto ids = [sv] {
      QStringList out;
      for (const PipelineStage& s : sv->stages()) out << s.id;
      return out;
    };
    // The synthetic workspace has a front and an analysis: their rows follow.
    QCOMPARE(ids(), (QStringList{"model", "corpus", "recording", "partition", "router", "evaluation", "export", "front",
                                 "analysis"}));
    QCOMPARE(sv->table()->rowCount(), static_cast<int>(sv->stages().size()));
    for (int r = 0; r < static_cast<int>(sv->stages().size()); ++r) {
      const PipelineStage& s = sv->stages()[r];
      QCOMPARE(sv->table()->item(r, 0)->text(), s.title);
      if (s.id == "model" || s.id == "corpus") {
        QVERIFY2(s.present, qPrintable(s.id));
        continue;
      }
      const QStringList paths = ctx->paths(s.id);
      QCOMPARE(s.count, static_cast<int>(paths.size()));
      const QString cell = sv->table()->item(r, 1)->text();
      QVERIFY2(cell.startsWith(s.count ? QString::number(s.count) : QString("none")), qPrintable(s.id + ": " + cell));
      if (s.count == 0) continue;
      QCOMPARE(s.newest, newestOf(s.id));
      for (const ArtefactRef& a : ctx->artefacts())
        if (a.path == s.newest) QCOMPARE(s.summary, a.summary);
      QVERIFY(!s.summary.isEmpty());
      QVERIFY2(sv->table()->item(r, 2)->text().contains(s.summary), qPrintable(sv->table()->item(r, 2)->text()));
    }
    QCOMPARE(sv->stages()[2].count, 1);
    QCOMPARE(sv->stages()[3].count, 4);
    QCOMPARE(sv->stages()[4].count, 2);
    // No export yet: the first missing stage, with the menu entry and the command.
    QCOMPARE(sv->firstMissing(), 6);
    const PipelineStage ex = sv->stages()[6];
    QCOMPARE(ex.id, QString("export"));
    QVERIFY(!ex.present);
    QCOMPARE(ex.action, QString("Pipeline > Export MoE checkpoint... (Ctrl+Shift+E)"));
    bool inMenu = false;
    for (QAction* a : w.menuBar()->findChildren<QAction*>()) inMenu |= a->text() == "Export MoE checkpoint...";
    QVERIFY(inMenu);
    const QString model = ctx->workspace().model();
    // The partition is the one the newest router was trained for (router.json's
    // link), not the newest partition: a new-user trial got a pair that
    // `moefy export` refuses.
    QString routerPart = newestOf("partition");
    if (auto r = Router::open(newestOf("router")); r && !r->partitionPath.isEmpty())
      routerPart = QDir::cleanPath(r->partitionPath);
    qInfo() << "newest router" << newestOf("router") << "its partition" << routerPart << "newest partition"
            << newestOf("partition");
    QCOMPARE(ex.command, QString("moefy export %1 %2 %3 --out %4")
                             .arg(model, routerPart, newestOf("router"),
                                  QDir::cleanPath(ctx->workspace().folder("exports") + "/moe1")));
    {
      // Another partition made the newest: the export still names the router's.
      QString other;
      for (const ArtefactRef& a : ctx->artefacts())
        if (a.kind == "partition" && QDir::cleanPath(a.path) != routerPart) other = a.path;
      QVERIFY(!other.isEmpty());
      // The fake workspace is shared by the GUI tests: its mtime is put back.
      const auto was = std::filesystem::last_write_time(other.toStdString());
      std::filesystem::last_write_time(other.toStdString(),
                                       std::filesystem::file_time_type::clock::now() + std::chrono::minutes(5));
      ctx->rescan();
      sv->refresh();
      const QString newestPart = newestOf("partition"), cmd = sv->stages()[6].command;
      std::filesystem::last_write_time(other.toStdString(), was);
      ctx->rescan();
      sv->refresh();
      QCOMPARE(QDir::cleanPath(newestPart), QDir::cleanPath(other));
      QVERIFY2(cmd.contains(" " + routerPart + " "), qPrintable(cmd));
      QVERIFY(!cmd.contains(" " + other + " "));
    }
    QVERIFY2(sv->nextStepLabel()->text().contains(ex.command.toHtmlEscaped()), qPrintable(sv->nextStepLabel()->text()));
    QVERIFY(sv->nextStepLabel()->text().contains("Export MoE checkpoint"));
    QVERIFY(sv->table()->item(6, 1)->text().contains("next step"));
    // Copy CLI command puts the row's command on the clipboard.
    for (int row : {6, 2}) {
      QGuiApplication::clipboard()->clear();
      QPushButton* b = sv->copyButton(row);
      QVERIFY(b);
      QCOMPARE(b->text(), QString("Copy CLI command"));
      sv->table()->scrollToItem(sv->table()->item(row, 0));
      QApplication::processEvents();
      QTest::mouseClick(b, Qt::LeftButton);
      QCOMPARE(QGuiApplication::clipboard()->text(), sv->stages()[row].command);
    }
    QVERIFY(sv->stages()[2].command.startsWith("moefy record " + model + " " + ctx->workspace().corpus() + " --out "));
    // Fits at 1366x768: the same budget as every tab (windowFitsASmallScreen),
    // no horizontal scrolling, the next step's button inside the table.
    QVERIFY(w.width() <= 1366 && w.height() <= 768);
    QVERIFY2(sv->minimumSizeHint().width() <= 1366 - 16 - 240 - 260 - 24,
             qPrintable(QString("minimum width %1").arg(sv->minimumSizeHint().width())));
    QVERIFY(!sv->table()->horizontalScrollBar()->isVisible());
    sv->table()->scrollToItem(sv->table()->item(6, 0));
    QApplication::processEvents();
    QPushButton* b = sv->copyButton(6);
    const QRect br(b->mapTo(sv->table()->viewport(), QPoint(0, 0)), b->size());
    QVERIFY2(sv->table()->viewport()->rect().contains(br), "the Copy CLI command button lies outside the table");
    // The screenshots keep their names: the Start page is 00-start.png.
    QTemporaryDir shots;
    const QStringList files = w.writeScreenshots(shots.path(), QSize(1366, 768));
    QVERIFY(files.size() >= 2);
    QCOMPARE(QFileInfo(files[0]).fileName(), QString("00-start.png"));
    QCOMPARE(QFileInfo(files[1]).fileName(), QString("01-model.png"));

    // An empty private workspace: the first missing stage is the recording;
    // no front/analysis rows, no report link.
    QTemporaryDir tmp;
    const QString pws = privateWorkspace(tmp);
    QVERIFY(!pws.isEmpty());
    QVERIFY(w.openWorkspace(pws));
    QApplication::processEvents();
    QCOMPARE(ids(), (QStringList{"model", "corpus", "recording", "partition", "router", "evaluation", "export"}));
    QCOMPARE(sv->firstMissing(), 2);
    const Workspace& pw0 = ctx->workspace();
    QCOMPARE(sv->stages()[2].command, QString("moefy record %1 %2 --out %3%4")
                                          .arg(pw0.model(), pw0.corpus(), QDir::cleanPath(pws + "/recordings/rec1"),
                                               pw0.separateEvalCorpus() ? "" : " --split train"));
    QVERIFY(sv->reportPath().isEmpty());
    QVERIFY(sv->reportLabel()->isHidden());

    // Its recordings and partitions taken from the shared workspace: the
    // router is next, built from the recording and the newest partition; a
    // report.md of `moefy demo` in the folder gets its link.
    Workspace pw = Workspace::load(pws);
    pw.folders["recordings"] = ws_ + "/recordings";
    pw.folders["partitions"] = ws_ + "/partitions";
    pw.save();
    {
      QFile f(pws + "/report.md");
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write("# MoEfy demo\n");
    }
    QVERIFY(w.openWorkspace(pws));
    QApplication::processEvents();
    QCOMPARE(sv->firstMissing(), 4);
    const PipelineStage rt = sv->stages()[4];
    QCOMPARE(rt.id, QString("router"));
    QCOMPARE(ctx->paths("recording").size(), 1);
    const QStringList parts = rt.command.split(' ');
    QVERIFY2(parts.size() == 9, qPrintable(rt.command));
    QCOMPARE(parts.mid(0, 5), (QStringList{"moefy", "route", ctx->workspace().model(), ctx->paths("recording")[0],
                                           newestOf("partition")}));
    QCOMPARE(parts[5], QString("--router"));
    QCOMPARE(parts.mid(7), (QStringList{"--out", QDir::cleanPath(pws + "/routers/router1")}));
    QCOMPARE(sv->reportPath(), QDir::cleanPath(pws + "/report.md"));
    QVERIFY(!sv->reportLabel()->isHidden());
    QVERIFY(sv->reportLabel()->text().contains(QUrl::fromLocalFile(sv->reportPath()).toString().toHtmlEscaped()));
    // It follows the context's rescans: a report.html (preferred) appears.
    {
      QFile f(pws + "/report.html");
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write("<html><body>MoEfy demo</body></html>\n");
    }
    ctx->rescan();
    QApplication::processEvents();
    QCOMPARE(sv->reportPath(), QDir::cleanPath(pws + "/report.html"));
  }

  void coactHoverAndLevelOfDetail() {
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* cv = viewOf<CoactView>(w);
    QVERIFY(cv);
    w.tabs()->setCurrentWidget(cv);
    QApplication::processEvents();
    cv->rebuildVisible();
    // The downsampled grid has no more cells than pixels.
    QVERIFY(cv->gridCells() > 0 && cv->gridCells() <= 256 * 256);
    // Hover maps display cells back to neuron ids through the partition's perm:
    // compare with the raw file, read here independently (the fake workspace's
    // recording is format version 1: the full matrix).
    auto coact = SafetensorsFile::open((ws_ + "/recordings/rec-brown/coact.safetensors").toStdString());
    auto labels = SafetensorsFile::open((ws_ + "/partitions/coact-E16-s0/labels.safetensors").toStdString());
    at::Tensor C = coact->raw("blk.0.coact");  // [256, 256]
    at::Tensor perm = labels->raw("blk.0.perm");  // [256]
    int r, c;
    long long n;
    QVERIFY(cv->cellAt(10.5, 200.5, &r, &c, &n));
    QCOMPARE(r, perm[200].item<int>());
    QCOMPARE(c, perm[10].item<int>());
    QCOMPARE(n, static_cast<long long>(C[r][c].item<int>()));
    qInfo() << "hover cell (200,10) -> neurons" << r << c << "count" << n;
    QVERIFY(!cv->cellAt(-1, 3, &r, &c, &n));
    // The colour scale is set from off-diagonal counts only (the diagonal holds
    // each neuron's firing count, far larger), and diagonal cells are NaN (grey).
    at::Tensor off = C.to(at::kDouble) - at::diag(at::diag(C.to(at::kDouble)));
    const double offMax = off.max().item<double>(), diagMax = at::diag(C).max().item<double>();
    qInfo() << "colour max" << cv->colourMax() << "off-diagonal max" << offMax << "diagonal max" << diagMax;
    QVERIFY(diagMax > offMax);
    QCOMPARE(cv->colourMax(), offMax);
    // Zoom to 40 x 40 neurons: one neuron per cell, the diagonal cells are NaN.
    cv->findChild<QCustomPlot*>()->xAxis->setRange(0, 40);
    cv->findChild<QCustomPlot*>()->yAxis->setRange(0, 40);
    cv->rebuildVisible();
    QCOMPARE(cv->gridCells(), 40 * 40);
    QVERIFY(std::isnan(cv->gridValue(5, 5)));
    QVERIFY(!std::isnan(cv->gridValue(5, 6)));
  }

  void exportFiguresInEveryFormat() {
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QTemporaryDir out;
    for (int i = 0; i < w.tabs()->count(); ++i) {
      w.tabs()->setCurrentIndex(i);
      QApplication::processEvents();
      FigureView* f = w.figureView(i);
      if (!f) continue;  // the Start page has no figure
      if (auto* mv = qobject_cast<ModelView*>(f)) QTRY_VERIFY_WITH_TIMEOUT(!mv->loading(), 20000);
      if (auto* cv = qobject_cast<CorpusView*>(f)) QTRY_VERIFY_WITH_TIMEOUT(!cv->loading(), 30000);
      if (auto* gv = qobject_cast<ExpertGraphView*>(f)) QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning(), 20000);
      QApplication::processEvents();
      const QString stem = out.filePath(f->figureBaseName());
      QString err;
      QVERIFY2(f->exportTo(stem + ".png", "png", 150, &err), qPrintable(err));
      QCOMPARE(head(stem + ".png", 8), QByteArray("\x89PNG\r\n\x1a\n", 8));
      QImage img(stem + ".png");
      QVERIFY(!img.isNull());
      QVERIFY(img.width() > f->figureRoot()->width());  // 150 dpi > screen resolution
      QVERIFY2(f->exportTo(stem + ".pdf", "pdf", 0, &err), qPrintable(err));
      QCOMPARE(head(stem + ".pdf", 5), QByteArray("%PDF-"));
      QVERIFY(QFileInfo(stem + ".pdf").size() > 1000);
      QVERIFY2(f->exportTo(stem + ".svg", "svg", 0, &err), qPrintable(err));
      QString why;
      QVERIFY2(svgValid(stem + ".svg", &why), qPrintable(stem + ".svg: " + why));
      QVERIFY2(f->exportCsv(stem + ".csv", &err), qPrintable(err));
      QVERIFY(QFileInfo(stem + ".csv").size() > 20);
      qInfo() << w.tabs()->tabText(i) << "png" << QFileInfo(stem + ".png").size() << "pdf" << QFileInfo(stem + ".pdf").size()
              << "svg" << QFileInfo(stem + ".svg").size();
    }
    // Export all layers: one figure per layer.
    auto* cv = viewOf<CoactView>(w);
    w.tabs()->setCurrentWidget(cv);
    QApplication::processEvents();
    QString err;
    QStringList files = cv->exportAllLayers(out.filePath("all"), "svg", 96, &err);
    QVERIFY2(err.isEmpty(), qPrintable(err));
    QCOMPARE(files.size(), 4);
    for (const QString& f : files) {
      QString why;
      QVERIFY2(svgValid(f, &why), qPrintable(f + ": " + why));
    }
  }

  void corpusViewShowsTokenBoundaries() {
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* cv = viewOf<CorpusView>(w);
    QVERIFY(cv);
    w.tabs()->setCurrentWidget(cv);
    QTRY_VERIFY_WITH_TIMEOUT(!cv->loading() && cv->hasData(), 30000);
    QCOMPARE(cv->documentCount(), 9);  // 3 categories x 3 files
    int n = cv->showDocument(0);
    QVERIFY(n > 20);
    // One shaded span per token.
    QCOMPARE(cv->documentHtml().count("background-color:#c6dbef") + cv->documentHtml().count("background-color:#fdd0a2"), n);
    QVERIFY(cv->csvData().count('\n') == 10);
  }

  void recordStepRunsToCompletion() {
    if (!findStep("record")) QSKIP("the recorder is not in this build");
    QTemporaryDir tmp;
    // A private copy of the workspace so the new recording does not leak into other tests.
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    PipelineJob job;
    QString err;
    QVERIFY2(makeStepJob("record", w.context(), {{"out", "rec-gui"}, {"seq-len", 64}, {"samples", 256}, {"tokens", 0}}, &job, &err),
             qPrintable(err));
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    int ticks = 0;
    QTimer timer;
    timer.setInterval(10);
    connect(&timer, &QTimer::timeout, [&] { ++ticks; });
    timer.start();
    QElapsedTimer el;
    el.start();
    QVERIFY(w.context()->jobs()->start(job.name, job.fn));
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 80000);
    timer.stop();
    QVERIFY2(fin.at(0).at(1).toBool(), qPrintable(fin.at(0).at(3).toString()));
    qInfo() << "recording took" << el.elapsed() << "ms; GUI timer ticks" << ticks;
    QVERIFY(ticks >= el.elapsed() / 10 * 0.5 - 3);  // short runs: allow for timer granularity
    QVERIFY(QFileInfo::exists(job.output + "/manifest.json"));
    QVERIFY(QFileInfo::exists(job.output + "/coact.safetensors"));
    // The finished job's artefact shows up in the tree and the views.
    QCOMPARE(w.context()->paths("recording").size(), 1);
    auto rec = w.context()->recording(job.output);
    QVERIFY(rec);
    QVERIFY(rec->tokens > 0);
    for (int i = 0; i < w.tabs()->count(); ++i) {
      w.tabs()->setCurrentIndex(i);
      QApplication::processEvents();
    }
    auto* sv = viewOf<SparsityView>(w);
    QVERIFY(sv->hasData());
  }

  void routerViewRoutesATypedText() {
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* rv = viewOf<RouterView>(w);
    QVERIFY(rv);
    w.tabs()->setCurrentWidget(rv);
    QApplication::processEvents();
    QVERIFY(rv->hasData());
    auto* edit = rv->findChild<QLineEdit*>("routeText");
    auto* run = rv->findChild<QPushButton*>("runText");
    QVERIFY(edit && run);
    const QString text = "the cat sat on the mat and the dog ran home";
    QTest::keyClicks(edit, text);
    QTest::mouseClick(run, Qt::LeftButton);
    QTRY_VERIFY_WITH_TIMEOUT(!rv->textRunning() && rv->typedTokens() > 0, 30000);
    QVERIFY(rv->showingTypedText());
    // As many heatmap rows as the workspace tokenizer makes tokens of the text.
    auto tok = w.context()->tokenizer();
    QVERIFY(tok);
    const int expected = static_cast<int>(tok->encode(text.toStdString(), true).size());
    qInfo() << "typed text:" << expected << "tokens, heatmap rows" << rv->heatmapRows();
    QCOMPARE(rv->typedTokens(), expected);
    QCOMPARE(rv->heatmapRows(), expected);
    QCOMPARE(w.issues()->count(), 0);
    // Another layer re-runs the model for that layer; the rows stay the tokens.
    auto* layerPick = rv->findChild<QComboBox*>("layerPicker");
    if (layerPick && layerPick->count() > 1) {
      layerPick->setCurrentIndex(layerPick->count() - 1);
      QTRY_VERIFY_WITH_TIMEOUT(!rv->textRunning(), 30000);
      QApplication::processEvents();
      QVERIFY(rv->showingTypedText());
      QCOMPARE(rv->heatmapRows(), expected);
    }
    // Back to a recorded document.
    auto* docs = rv->findChild<QComboBox*>("documentPicker");
    docs->setCurrentIndex(1);
    QVERIFY(!rv->showingTypedText());
    QVERIFY(rv->heatmapRows() > 0);
  }

  void calibrateDialogRunsToCompletion() {
    for (const char* id : {"record", "split", "route", "export", "calibrate"})
      if (!findStep(id)) QSKIP("the pipeline steps are not all in this build");
    QTemporaryDir tmp;
    // A private workspace over the shared model and corpus; the recording,
    // partition, router and export it calibrates are made by the real pipeline
    // steps (the synthetic workspace's artefacts carry fake fingerprints).
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    auto runStep = [&](const QString& id, const QVariantMap& values) -> QString {
      PipelineJob job;
      QString err;
      if (!makeStepJob(id, w.context(), values, &job, &err)) return "make " + id + ": " + err;
      const int before = fin.count();
      if (!w.context()->jobs()->start(job.name, job.fn)) return id + ": not started";
      if (!QTest::qWaitFor([&] { return fin.count() > before; }, 120000)) return id + ": timed out";
      if (!fin.last().at(1).toBool()) return id + ": " + fin.last().at(3).toString();
      return "ok:" + job.output;
    };
    QString r = runStep("record", {{"out", "rec"}, {"seq-len", 64}, {"samples", 512}, {"tokens", 0}});
    QVERIFY2(r.startsWith("ok:"), qPrintable(r));
    const QString rec = r.mid(3);
    r = runStep("split", {{"recording", rec}, {"out", "part"}, {"experts", 16}, {"no-stability", true}});
    QVERIFY2(r.startsWith("ok:"), qPrintable(r));
    const QString part = r.mid(3);
    r = runStep("route", {{"recording", rec}, {"partition", part}, {"out", "sim"}, {"router", "similarity"}});
    QVERIFY2(r.startsWith("ok:"), qPrintable(r));
    const QString router = r.mid(3);
    // The Evaluate step (core runEvaluation, shared with 'moefy eval') on the new router.
    r = runStep("eval", {{"partition", part}, {"router", router}, {"all-routers", false}, {"out", "ev"}, {"sweep", "0.5,1"},
                         {"tokens", 512}, {"seq-len", 32}, {"split", "all"}});
    QVERIFY2(r.startsWith("ok:"), qPrintable(r));
    {
      auto ev = w.context()->evaluation(r.mid(3));
      QVERIFY(ev);
      QCOMPARE(ev->meta["results"].size(), size_t(2));
      QCOMPARE(QString::fromStdString(ev->meta["results"][0]["router"].get<std::string>()), QString("similarity"));
      // All experts active: the MoE computes the dense FFN (up to summation order).
      const double full = ev->meta["results"][1]["loss"].get<double>(), dense = ev->meta["reference"]["loss"].get<double>();
      qInfo() << "eval step: dense loss" << dense << "fraction 1 loss" << full << "diff" << std::fabs(full - dense);
      QVERIFY(std::fabs(full - dense) < 1e-3);
    }
    r = runStep("export", {{"partition", part}, {"router", router}, {"out", "moe"}});
    QVERIFY2(r.startsWith("ok:"), qPrintable(r));
    PipelineJob exp;
    exp.output = r.mid(3);
    QCOMPARE(w.context()->paths("export").size(), 1);
    w.context()->setCurrent("export", exp.output);
    const int jobsBefore = fin.count();

    // The Calibrate step through the Pipeline menu and its dialog.
    QAction* act = nullptr;
    for (QAction* a : w.menuBar()->findChildren<QAction*>())
      if (a->text().startsWith("Calibrate")) act = a;
    QVERIFY2(act, "Pipeline > Calibrate... is in the menu");
    QString dialogSeen;
    QTimer::singleShot(0, &w, [&] {
      auto* d = qobject_cast<QDialog*>(QApplication::activeModalWidget());
      if (!d) return;
      dialogSeen = d->objectName();
      auto* out = d->findChild<QLineEdit*>("out");
      if (out) out->setText("calib-gui");
      if (auto* sb = d->findChild<QSpinBox*>("steps")) sb->setValue(3);
      if (auto* sb = d->findChild<QSpinBox*>("tokens")) sb->setValue(1500);
      if (auto* sb = d->findChild<QSpinBox*>("seq-len")) sb->setValue(32);
      if (auto* sb = d->findChild<QSpinBox*>("batch")) sb->setValue(2);
      if (auto* cb = d->findChild<QComboBox*>("split")) cb->setCurrentText("all");
      d->accept();
    });
    act->trigger();
    QCOMPARE(dialogSeen, QString("stepDialog-calibrate"));
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), jobsBefore + 1, 120000);
    QVERIFY2(fin.last().at(1).toBool(), qPrintable(fin.last().at(3).toString()));
    const QString out = ws + "/calibrated/calib-gui";
    QVERIFY(QFileInfo::exists(out + "/config.json"));
    // The calibrated folder loads as a MoE with the calibration block, and shows up in the tree.
    LoadedModel loaded = loadModel(out.toStdString());
    QVERIFY(loaded.isMoe());
    QVERIFY(loaded.moefication.contains("calibration"));
    QCOMPARE(loaded.moefication["calibration"]["steps"].get<int>(), 3);
    qInfo() << "calibrated: LM loss" << loaded.moefication["calibration"]["lm_loss_before"].get<double>() << "->"
            << loaded.moefication["calibration"]["lm_loss_after"].get<double>() << "router loss"
            << loaded.moefication["calibration"]["router_loss_before"].get<double>() << "->"
            << loaded.moefication["calibration"]["router_loss_after"].get<double>();
    QVERIFY(std::isfinite(loaded.moefication["calibration"]["router_loss_after"].get<double>()));
    QCOMPARE(w.context()->paths("export").size(), 2);
    QVERIFY(w.context()->paths("export").contains(QFileInfo(out).absoluteFilePath()));
    // The same job refuses to overwrite without --force.
    PipelineJob again;
    QString err;
    QVERIFY(!makeStepJob("calibrate", w.context(), {{"export", exp.output}, {"out", "calib-gui"}}, &again, &err));
    QVERIFY2(err.contains("already exists"), qPrintable(err));
  }

  void linkedSelectionReachesInspector() {
    MainWindow w;
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    w.context()->selectNeuron(1, 42);
    auto* insp = w.findChild<NeuronInspector*>();
    QVERIFY(insp);
    QVERIFY(insp->text().contains("neuron 42"));
    QVERIFY(insp->text().contains("firing frequency"));
    QVERIFY(insp->text().contains("Top-activating"));
  }

  void corruptArtefactIsReportedNotFatal() {
    QTemporaryDir tmp;
    QString ws = tmp.filePath("ws");
    QVERIFY(QDir().mkpath(ws + "/partitions/bad"));
    QFile::copy(ws_ + "/workspace.json", ws + "/workspace.json");
    QFile f(ws + "/partitions/bad/partition.json");
    QVERIFY(f.open(QIODevice::WriteOnly));
    // A partition.json the reader accepts, next to a broken labels file.
    f.write(
        "{\"format\": \"moefy-partition\", \"version\": 1, \"method\": \"random\", \"experts\": 4, "
        "\"d_ff\": 16, \"expert_size\": 4, \"layers\": [0], \"model_fingerprint\": \"0123456789abcdef\"}");
    f.close();
    QFile g(ws + "/partitions/bad/labels.safetensors");
    QVERIFY(g.open(QIODevice::WriteOnly));
    g.write("not a safetensors file");
    g.close();
    MainWindow w;
    w.show();
    QVERIFY(w.openWorkspace(ws));
    for (int i = 0; i < w.tabs()->count(); ++i) {
      w.tabs()->setCurrentIndex(i);
      QApplication::processEvents();
    }
    bool named = false;
    for (int i = 0; i < w.issues()->count(); ++i) named |= w.issues()->item(i)->text().contains("labels.safetensors");
    QVERIFY2(named, "the broken file is named in the issues dock");
  }

  void jobRunsToCompletionOffTheGuiThread() {
    JobRunner runner;
    QTemporaryDir tmp;
    const auto out = std::filesystem::path(tmp.filePath("out").toStdString());
    const auto model = std::filesystem::path((ws_ + "/model").toStdString());
    QSignalSpy fin(&runner, &JobRunner::finished);
    QSignalSpy prog(&runner, &JobRunner::progress);
    int ticks = 0;
    QTimer timer;
    timer.setInterval(10);
    connect(&timer, &QTimer::timeout, [&] { ++ticks; });
    timer.start();
    QElapsedTimer el;
    el.start();
    QVERIFY(runner.start("forward", [&](JobContext& job) { test::forwardJob(model, out, 60, job); }));
    QVERIFY(!runner.start("second", [](JobContext&) {}));  // one at a time
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 60000);
    double secs = el.elapsed() / 1000.0;
    timer.stop();
    QCOMPARE(fin.at(0).at(1).toBool(), true);
    QVERIFY(prog.count() >= 2);
    QVERIFY(std::filesystem::exists(out / "hidden.safetensors"));
    // The GUI thread kept processing events: at least half the expected ticks.
    qInfo() << "job took" << secs << "s; timer ticks" << ticks << "expected ~" << secs * 100;
    QVERIFY(ticks >= secs * 100 * 0.5);
  }

  void cancelLeavesNothingPartial() {
    MainWindow w;
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    JobRunner* runner = w.context()->jobs();
    QTemporaryDir tmp;
    const auto out = std::filesystem::path(tmp.filePath("out").toStdString());
    const auto model = std::filesystem::path((ws_ + "/model").toStdString());
    QSignalSpy fin(runner, &JobRunner::finished);
    QSignalSpy prog(runner, &JobRunner::progress);
    QVERIFY(runner->start("long forward", [&](JobContext& job) { test::forwardJob(model, out, 100000, job); }));
    QVERIFY(w.cancelButton()->isEnabled());
    QTRY_VERIFY_WITH_TIMEOUT(prog.count() > 0 && w.jobStage()->text() == "forward", 30000);
    QElapsedTimer el;
    el.start();
    QTest::mouseClick(w.cancelButton(), Qt::LeftButton);
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 5000);
    qInfo() << "cancel took" << el.elapsed() << "ms";
    QVERIFY(el.elapsed() < 1000);
    QCOMPARE(fin.at(0).at(1).toBool(), false);
    QCOMPARE(fin.at(0).at(2).toBool(), true);
    QVERIFY(!std::filesystem::exists(out));
    QCOMPARE(QDir(tmp.path()).entryList(QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden).size(), 0);
    QVERIFY(!w.cancelButton()->isEnabled());
  }

  // Batch mode (--screenshots): a workspace that does not open is one line on
  // stderr naming the file and a non-zero exit, and nothing is written; a
  // malformed option (a bad --size, an unknown option, a second positional
  // argument) exits 2 with one line, as the CLI.
  void studioBatchModeRefusesBadWorkspacesAndOptions() {
    QTemporaryDir tmp;
    const QString noJson = tmp.filePath("no-json"), truncated = tmp.filePath("truncated");
    QVERIFY(QDir().mkpath(noJson) && QDir().mkpath(truncated));
    {
      QFile f(truncated + "/workspace.json");
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write("{\"format\": \"moefy-workspace\", \"na");
    }
    struct Case {
      QStringList args;
      int exit;
      QString expect;
    };
    const QString out = tmp.filePath("shots");
    const std::vector<Case> cases = {
        {{tmp.filePath("nonexistent"), "--screenshots", out}, 1, tmp.filePath("nonexistent/workspace.json")},
        {{noJson, "--screenshots", out}, 1, noJson + "/workspace.json: missing"},
        {{truncated, "--screenshots", out}, 1, truncated + "/workspace.json: invalid JSON"},
        {{ws_, "--screenshots", out, "--size", "10x"}, 2, "--size: '10x' is not WxH"},
        {{ws_, "--screenshots", out, "--size", "100x100"}, 2, "--size: '100x100'"},
        {{ws_, "--screenshots", out, "--frobnicate"}, 2, "frobnicate"},
        {{ws_, ws_, "--screenshots", out}, 2, "unexpected argument"},
        {{ws_, "--screenshots"}, 2, "screenshots"},
    };
    for (const auto& c : cases) {
      const test::RunResult r = test::runStudio(c.args, 120);
      qInfo() << c.args.join(' ') << "-> exit" << r.exitCode << r.err.c_str();
      QVERIFY2(r.exitCode == c.exit, qPrintable(c.args.join(' ') + ": exit " + QString::number(r.exitCode)));
      QVERIFY2(QString::fromStdString(r.err).contains(c.expect), qPrintable(c.args.join(' ') + ": " + r.err.c_str()));
      // One line of ours (Qt may add its own environment notes, e.g. XDG_RUNTIME_DIR).
      int ours = 0;
      std::istringstream lines(r.err);
      for (std::string line; std::getline(lines, line);) ours += line.rfind("moefy-studio: ", 0) == 0;
      QVERIFY2(ours == 1, r.err.c_str());
      QVERIFY2(!QFileInfo::exists(out), qPrintable(c.args.join(' ') + ": wrote " + out));
    }
  }

  void coreErrorInJobGoesToIssues() {
    MainWindow w;
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    QTemporaryDir tmp;
    w.context()->jobs()->start("bad model", [&](JobContext& job) {
      test::forwardJob(tmp.filePath("no-such-model").toStdString(), tmp.filePath("o").toStdString(), 1, job);
    });
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 20000);
    QVERIFY(!fin.at(0).at(3).toString().isEmpty());
    bool found = false;
    for (int i = 0; i < w.issues()->count(); ++i) found |= w.issues()->item(i)->text().contains("no-such-model");
    QVERIFY(found);
  }
};

QTEST_MAIN(TestStudio)
#include "test_studio.moc"
