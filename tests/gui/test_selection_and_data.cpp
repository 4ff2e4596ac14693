// Issue 20: one shared selection drives every view across layers (defect 8),
// the Evaluation view says which data each figure is on and flags recordings
// that read the evaluation's documents, the Evaluate and Record dialogs
// default to the workspace's evaluation and training corpora (defect 4), and
// the Router view's token labels do not overlap at 1366x768.
#include "views/qcp.h"

#include <QApplication>
#include <QComboBox>
#include <QDialog>
#include <QFontMetrics>
#include <QLineEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTimer>
#include <QtTest>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gui_fixture.h"
#include "studio_test_helpers.h"
#include "views/artefacts.h"
#include "views/figure.h"
#include "views/mainwindow.h"
#include "views/pipeline.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;
using json = nlohmann::json;

namespace {

// The inspector's "expert" row reads "<expert> in <partition>" (its cells may
// be split by a tab or a line break in the plain text).
bool expertRow(const QString& text, int expert, const QString& partition) {
  const QString pattern = QString("expert\\s+%1 in %2").arg(expert).arg(QRegularExpression::escape(partition));
  return text.contains(QRegularExpression(pattern));
}

json readJson(const QString& path) {
  std::ifstream f(path.toStdString());
  return json::parse(f);
}

void writeJson(const QString& path, const json& j) {
  QDir().mkpath(QFileInfo(path).absolutePath());
  std::ofstream f(path.toStdString());
  f << j.dump(2);
}

// Shows every tab once (their pickers fill), waiting for the background work.
void visitEveryView(MainWindow& w) {
  for (int i = 0; i < w.tabs()->count(); ++i) {
    w.tabs()->setCurrentIndex(i);
    QApplication::processEvents();
    if (auto* gv = qobject_cast<ExpertGraphView*>(w.tabs()->widget(i)))
      QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning(), 20000);
  }
}
}  // namespace

class TestSelectionAndData : public QObject {
  Q_OBJECT
  QString ws_;

 private Q_SLOTS:
  void initTestCase() {
    QString err;
    ws_ = test::studioTestWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  // Defect 8: selecting a neuron on layer 3 moves every view with a layer
  // picker to layer 3, and the expert graph rings the neuron's expert.
  void selectionCrossesLayers() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    visitEveryView(w);
    // Every layered view on layer 0 first.
    QList<FigureView*> layered;
    for (int i = 0; i < w.tabs()->count(); ++i)
      if (FigureView* f = w.figureView(i); f && f->layerCombo() && f->layerCombo()->count() > 3) {
        f->layerCombo()->setCurrentIndex(f->layerCombo()->findData(0));
        layered << f;
      }
    QVERIFY2(layered.size() >= 4, qPrintable(QString("only %1 views with 4 layers").arg(layered.size())));
    auto* coact = test::studioView<CoactView>(w);
    auto* graph = test::studioView<ExpertGraphView>(w);
    QVERIFY(coact && graph);
    w.tabs()->setCurrentWidget(coact);
    QApplication::processEvents();
    for (FigureView* f : layered) QCOMPARE(f->layer(), 0);

    // The selection a view makes (the co-activation map's right-click calls this).
    const int neuron = 42;
    w.context()->selectNeuron(3, neuron);
    QApplication::processEvents();
    for (FigureView* f : layered)
      QVERIFY2(f->layer() == 3, qPrintable(f->title() + QString(" stayed on layer %1").arg(f->layer())));

    // The expert graph, shown, draws layer 3 and rings the neuron's expert in
    // the partition it draws.
    w.tabs()->setCurrentWidget(graph);
    QApplication::processEvents();
    QTRY_VERIFY_WITH_TIMEOUT(!graph->layoutRunning(), 20000);
    auto part = w.context()->partition(w.context()->current("partition"));
    QVERIFY(part && part->labels.count(3));
    const int expert = part->labels.at(3)[neuron];
    qInfo() << "neuron" << neuron << "of layer 3 is in expert" << expert << "of" << part->name << "; the graph rings"
            << graph->ringedExpert();
    QCOMPARE(graph->layer(), 3);
    QCOMPARE(graph->ringedExpert(), expert);
    QCOMPARE(w.context()->selection().expert, expert);
    QCOMPARE(w.context()->selection().layer, 3);
    // Every view still has data on the new layer.
    for (FigureView* f : layered) {
      w.tabs()->setCurrentWidget(f);
      QApplication::processEvents();
      if (f == graph) QTRY_VERIFY_WITH_TIMEOUT(!graph->layoutRunning(), 20000);
      QVERIFY2(f->hasData(), qPrintable(f->title()));
      QCOMPARE(f->layer(), 3);
    }
    // Selecting an expert on layer 1 moves them again; a neuron outside it is dropped.
    w.context()->selectExpert(1, 2);
    QApplication::processEvents();
    for (FigureView* f : layered) QCOMPARE(f->layer(), 1);
    QCOMPARE(w.context()->selection().neuron, -1);
    QCOMPARE(graph->ringedExpert(), 2);
  }

  // Defect 8: the inspector's expert is the selected neuron's expert in the
  // selection's partition, and follows it when the partition changes.
  void inspectorExpertFollowsTheSelectionsPartition() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    visitEveryView(w);
    auto* insp = w.findChild<NeuronInspector*>();
    QVERIFY(insp);
    QString coactPath, randomPath;
    for (const QString& p : w.context()->paths("partition")) {
      if (QFileInfo(p).fileName().startsWith("coact")) coactPath = p;
      if (QFileInfo(p).fileName().startsWith("random")) randomPath = p;
    }
    QVERIFY(!coactPath.isEmpty() && !randomPath.isEmpty());
    auto coact = w.context()->partition(coactPath), random = w.context()->partition(randomPath);
    QVERIFY(coact && random);
    // A neuron whose expert differs between the two partitions.
    const int L = 1;
    int n = 0;
    while (n < coact->dFF && coact->labels.at(L)[n] == random->labels.at(L)[n]) ++n;
    QVERIFY(n < coact->dFF);
    const int inCoact = coact->labels.at(L)[n], inRandom = random->labels.at(L)[n];

    auto* coactView = test::studioView<CoactView>(w);
    w.tabs()->setCurrentWidget(coactView);
    auto* picker = coactView->findChild<QComboBox*>("partitionPicker");
    QVERIFY(picker);
    picker->setCurrentIndex(picker->findData(coactPath));
    QApplication::processEvents();
    w.context()->selectNeuron(L, n);
    QApplication::processEvents();
    qInfo() << insp->text().left(300);
    QVERIFY2(expertRow(insp->text(), inCoact, coact->name), qPrintable(insp->text()));
    QCOMPARE(w.context()->selection().expert, inCoact);

    // Another partition picked in a view: the selection's partition, so the
    // inspector's expert and the graph's ring follow at once.
    picker->setCurrentIndex(picker->findData(randomPath));
    QApplication::processEvents();
    QCOMPARE(w.context()->selection().partition, randomPath);
    QCOMPARE(w.context()->selection().expert, inRandom);
    QCOMPARE(w.context()->selection().neuron, n);
    QVERIFY2(expertRow(insp->text(), inRandom, random->name), qPrintable(insp->text()));
    QVERIFY(!insp->text().contains(QString("in %1").arg(coact->name)));
    auto* graph = test::studioView<ExpertGraphView>(w);
    w.tabs()->setCurrentWidget(graph);
    QApplication::processEvents();
    QTRY_VERIFY_WITH_TIMEOUT(!graph->layoutRunning(), 20000);
    QCOMPARE(graph->ringedExpert(), inRandom);
  }

  // The Router view's token labels at 1366x768: thinned to what fits, never
  // overlapping, in a readable font.
  void routerTokenLabelsFitAt1366x768() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* rv = test::studioView<RouterView>(w);
    QVERIFY(rv);
    w.tabs()->setCurrentWidget(rv);
    QApplication::processEvents();
    QVERIFY(rv->hasData());
    QString text;
    const QStringList words = {"the", "people", "said", "that", "the", "state", "would", "make", "good", "time"};
    for (int i = 0; i < 90; ++i) text += words[i % words.size()] + " ";
    rv->runText(text.trimmed());
    QTRY_VERIFY_WITH_TIMEOUT(!rv->textRunning() && rv->typedTokens() > 0, 30000);
    QApplication::processEvents();
    QCustomPlot* plot = rv->scoresPlot();
    QVERIFY(plot);
    plot->replot(QCustomPlot::rpImmediateRefresh);
    plot->replot(QCustomPlot::rpImmediateRefresh);
    QCPAxis* y = plot->yAxis;
    const QVector<double> ticks = y->tickVector();
    const QVector<QString> labels = y->tickVectorLabels();
    const QFontMetrics fm(y->tickLabelFont());
    const int rows = rv->heatmapRows();
    const double axisPx = y->axisRect()->height();
    qInfo() << "rows" << rows << "axis" << axisPx << "px, label height" << fm.height() << "px," << ticks.size()
            << "labels shown, font" << y->tickLabelFont().pointSizeF() << "pt";
    QVERIFY2(rows >= 60, qPrintable(QString("only %1 rows: the text is too short to test thinning").arg(rows)));
    QVERIFY(y->tickLabelFont().pointSizeF() >= 7.5);  // readable: not shrunk below 8 pt
    QVERIFY(ticks.size() >= 4);
    QVERIFY2(rows * fm.height() > axisPx, "the plot is tall enough for every label: the test shows nothing");
    QVERIFY2(ticks.size() < rows, "every row is labelled although they cannot fit");
    for (int i = 1; i < ticks.size(); ++i) {
      const double gap = std::abs(y->coordToPixel(ticks[i]) - y->coordToPixel(ticks[i - 1]));
      QVERIFY2(gap >= fm.height(), qPrintable(QString("labels '%1' and '%2' are %3 px apart, %4 px high")
                                                  .arg(labels[i - 1], labels[i])
                                                  .arg(gap)
                                                  .arg(fm.height())));
    }
    // Evenly thinned: the shown rows are every n-th row from the first.
    QCOMPARE(ticks.first(), 0.0);
    // Long tokens are elided, the position kept.
    for (const QString& l : labels) {
      QVERIFY2(l.contains(" @"), qPrintable(l));
      QVERIFY2(fm.horizontalAdvance(l.section(" @", 0, 0)) <= 90, qPrintable(l));
    }
    // Smaller window, fewer labels, still apart.
    w.resize(1366, 600);
    QApplication::processEvents();
    plot->replot(QCustomPlot::rpImmediateRefresh);
    plot->replot(QCustomPlot::rpImmediateRefresh);
    const QVector<double> t2 = y->tickVector();
    for (int i = 1; i < t2.size(); ++i)
      QVERIFY(std::abs(y->coordToPixel(t2[i]) - y->coordToPixel(t2[i - 1])) >= fm.height());
  }

  // Defect 4: the Evaluation view says which data its figures are on, and
  // flags an evaluation whose recording read the same documents.
  void evalViewCaptionsAndOverlapBadge() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(ws_, tmp);
    QVERIFY(!ws.isEmpty());
    // The fake evaluation's routers come from recordings/rec-brown, which
    // recorded all of ws_/corpus (split "all").
    json doc = readJson(ws_ + "/evaluations/eval-coact/eval.json");
    doc["seed"] = 5;
    doc["corpus"]["split"] = "all";
    doc["corpus"]["path"] = (ws_ + "/corpus").toStdString();
    writeJson(ws + "/evaluations/on-training-data/eval.json", doc);
    const QString otherCorpus = tmp.filePath("other-corpus");
    QVERIFY(QDir().mkpath(otherCorpus));
    doc["corpus"]["path"] = otherCorpus.toStdString();
    doc["corpus"]["split"] = "heldout";
    doc["corpus"]["sequences"] = 7;
    writeJson(ws + "/evaluations/on-other-data/eval.json", doc);

    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* ev = test::studioView<EvalView>(w);
    QVERIFY(ev);
    w.tabs()->setCurrentWidget(ev);
    QApplication::processEvents();
    auto* picker = ev->findChild<QComboBox*>("evaluationPicker");
    QVERIFY(picker && picker->count() == 2);

    picker->setCurrentIndex(picker->findText("on-training-data"));
    QApplication::processEvents();
    QVERIFY(ev->hasData());
    qInfo() << "caption:" << ev->dataCaption(0) << "| badge:" << ev->overlapBadge()->toolTip();
    for (int p = 0; p < 2; ++p) {
      QVERIFY2(ev->dataCaption(p).startsWith("data: all documents of corpus"), qPrintable(ev->dataCaption(p)));
      QVERIFY2(ev->dataCaption(p).contains("100 sequences"), qPrintable(ev->dataCaption(p)));
      QVERIFY2(ev->dataCaption(p).contains("seed 5"), qPrintable(ev->dataCaption(p)));
    }
    QVERIFY(ev->overlapBadgeShown());
    QVERIFY(ev->overlapBadge()->text().contains("training data"));
    QVERIFY2(ev->overlapBadge()->toolTip().contains("rec-brown"), qPrintable(ev->overlapBadge()->toolTip()));
    QVERIFY(ev->overlapBadge()->toolTip().contains("overlaps the evaluation data"));

    picker->setCurrentIndex(picker->findText("on-other-data"));
    QApplication::processEvents();
    qInfo() << "caption:" << ev->dataCaption(0);
    QVERIFY2(ev->dataCaption(0).startsWith("data: held-out split of other-corpus, 7 sequences"),
             qPrintable(ev->dataCaption(0)));
    QVERIFY(!ev->overlapBadgeShown());
    // The caption is part of the figure: it is a text element of both plots.
    int captions = 0;
    for (QCustomPlot* p : ev->findChildren<QCustomPlot*>())
      for (int i = 0; i < p->plotLayout()->elementCount(); ++i)
        if (auto* t = qobject_cast<QCPTextElement*>(p->plotLayout()->elementAt(i)); t && t->text().startsWith("data: "))
          ++captions;
    QCOMPARE(captions, 2);
  }

  // Defect 4: the Evaluate dialog reads the workspace's evaluation corpus
  // (whole), the Record dialog its training corpus; without an evaluation
  // corpus, evaluation reads the held-out split and recording the training split.
  void dialogsDefaultToTheWorkspaceCorpora() {
    if (!findStep("eval") || !findStep("record")) QSKIP("eval or record is not in this build");
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(ws_, tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    QVERIFY(w.openWorkspace(ws));
    const PipelineStep& eval = *findStep("eval");
    const PipelineStep& record = *findStep("record");
    QVariantMap e = withDefaults(eval, w.context(), {});
    QVariantMap r = withDefaults(record, w.context(), {});
    QCOMPARE(e.value("corpus").toString(), w.context()->workspace().corpus());
    QCOMPARE(e.value("split").toString(), QString("heldout"));
    QCOMPARE(r.value("corpus").toString(), w.context()->workspace().corpus());
    QCOMPARE(r.value("split").toString(), QString("train"));

    // A workspace with an evaluation corpus of its own (the demo's layout).
    Workspace edited = w.context()->workspace();
    const QString heldout = tmp.filePath("heldout-corpus");
    QVERIFY(QDir().mkpath(heldout));
    edited.evalCorpusPath = heldout;
    edited.save();
    QVERIFY(w.openWorkspace(ws));
    QCOMPARE(w.context()->workspace().evalCorpus(), heldout);
    e = withDefaults(eval, w.context(), {});
    r = withDefaults(record, w.context(), {});
    QCOMPARE(e.value("corpus").toString(), heldout);
    QCOMPARE(e.value("split").toString(), QString("all"));
    QCOMPARE(r.value("corpus").toString(), w.context()->workspace().corpus());
    QCOMPARE(r.value("split").toString(), QString("all"));
    // The dialog shows the same values.
    QString shownCorpus, shownSplit;
    QTimer::singleShot(0, &w, [&] {
      auto* d = qobject_cast<QDialog*>(QApplication::activeModalWidget());
      if (!d) return;
      if (auto* c = d->findChild<QLineEdit*>("corpus")) shownCorpus = c->text();
      if (auto* s = d->findChild<QComboBox*>("split")) shownSplit = s->currentText();
      d->reject();
    });
    PipelineJob job;
    QString err;
    QVERIFY(!runStepDialog(eval, &w, w.context(), &job, &err));
    QCOMPARE(shownCorpus, heldout);
    QCOMPARE(shownSplit, QString("all"));
    // An explicit value wins over the workspace's.
    QCOMPARE(withDefaults(eval, w.context(), {{"split", "train"}}).value("split").toString(), QString("train"));
  }

  // Defect 4: the demo output opens as a workspace whose training corpus is
  // brown/train and whose evaluation corpus is brown/heldout (it was heldout
  // for both, so the studio evaluated the held-out part's held-out part).
  void demoOutputWorkspaceSeparatesTheCorpora() {
    QTemporaryDir data;
    QVERIFY(QDir().mkpath(data.filePath("demo/recording")));
    writeJson(data.filePath("demo/recording/manifest.json"), {{"format", "moefy-recording"}});
    qputenv("MOEFY_DATA_DIR", data.path().toUtf8());
    QString err;
    const QString dir = demoWorkspaceDir(&err);
    qunsetenv("MOEFY_DATA_DIR");
    QVERIFY2(!dir.isEmpty(), qPrintable(err));
    const Workspace ws = Workspace::load(dir);
    QCOMPARE(ws.corpus(), QDir::cleanPath(data.path() + "/corpus/brown/train"));
    QCOMPARE(ws.evalCorpus(), QDir::cleanPath(data.path() + "/corpus/brown/heldout"));
    QVERIFY(ws.separateEvalCorpus());
  }
};

QTEST_MAIN(TestSelectionAndData)
#include "test_selection_and_data.moc"
