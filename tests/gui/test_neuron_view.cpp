// Issue 20: the Neuron view's neuron and expert pages, checked against the
// recording, the partitions and the core's routing, and the contexts'
// activations against an independent forward pass of the model (the shared
// model of the synthetic workspace, recorded for real with `moefy record`).
#include "views/qcp.h"

#include <QApplication>
#include <QDir>
#include <QLabel>
#include <QScrollBar>
#include <QTabWidget>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTextBrowser>
#include <QUrl>
#include <QtTest>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "analysis/record/recording.h"
#include "analysis/route/router_scores.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "gui_fixture.h"
#include "studio_test_helpers.h"
#include "testutil.h"
#include "views/artefacts.h"
#include "views/mainwindow.h"
#include "views/style.h"
#include "views/view_corpus.h"
#include "views/view_neuron.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;

namespace {

/// One neuron's FFN activation of a single-stack layer for one token window,
/// written here so that the check does not go through the view's core path.
class ColumnHook : public HookSink {
 public:
  ColumnHook(int layer, int neuron) : layer_(layer), neuron_(neuron) {}
  std::vector<float> column;
  bool wants(int layer, HookPoint p) const override { return layer == layer_ && p == HookPoint::FfnAct; }
  void on(int, HookPoint, const at::Tensor& x) override {
    at::Tensor c = x[0].select(1, neuron_).to(at::kFloat).contiguous();
    column.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }

 private:
  int layer_, neuron_;
};

/// The neuron's activation on every token of `ids`, windows of `seqLen` from token 0 (as `moefy record` cuts them).
std::vector<float> windowedColumn(const Model& model, const std::vector<int32_t>& ids, int layer, int neuron,
                                  int seqLen) {
  std::vector<float> out;
  for (size_t w = 0; w < ids.size(); w += static_cast<size_t>(seqLen)) {
    const size_t end = std::min(ids.size(), w + static_cast<size_t>(seqLen));
    ColumnHook hook(layer, neuron);
    model.forwardHidden(makeBatch({std::vector<int64_t>(ids.begin() + w, ids.begin() + end)}), &hook);
    out.insert(out.end(), hook.column.begin(), hook.column.end());
  }
  return out;
}

void waitIdle(NeuronView* nv, int ms = 60000) {
  QTRY_VERIFY_WITH_TIMEOUT(!nv->busy(), ms);
  QApplication::processEvents();
}

QString pathNamed(StudioContext* ctx, const QString& kind, const QString& name) {
  for (const QString& p : ctx->paths(kind))
    if (QFileInfo(p).fileName() == name) return p;
  return {};
}

/// No visible widget of `view` reaches outside the window, and the view leaves room for the docks at 1366.
void checkFits(MainWindow& w, QWidget* view) {
  QVERIFY(w.width() <= 1366 && w.height() <= 768);
  QVERIFY2(view->minimumSizeHint().width() <= 1366 - 16 - 240 - 260 - 24,
           qPrintable(QString("minimum width %1").arg(view->minimumSizeHint().width())));
  for (QWidget* c : view->findChildren<QWidget*>()) {
    if (!c->isVisible()) continue;
    const QRect r(c->mapTo(&w, QPoint(0, 0)), c->size());
    QVERIFY2(r.left() >= 0 && r.top() >= 0 && r.right() < w.width() && r.bottom() < w.height(),
             qPrintable(QString("%1 (%2) at %3,%4 %5x%6 in a %7x%8 window")
                            .arg(c->objectName(), c->metaObject()->className())
                            .arg(r.x())
                            .arg(r.y())
                            .arg(r.width())
                            .arg(r.height())
                            .arg(w.width())
                            .arg(w.height())));
  }
  for (QTableWidget* t : view->findChildren<QTableWidget*>())
    if (t->isVisible()) QVERIFY2(!t->horizontalScrollBar()->isVisible(), qPrintable(t->objectName()));
}

void exportBoth(NeuronView* nv, const QDir& out) {
  QString err;
  for (const char* fmt : {"png", "svg", "pdf"}) {
    const QString file = out.filePath(nv->figureBaseName() + "." + fmt);
    QVERIFY2(nv->exportTo(file, fmt, 96, &err), qPrintable(err));
    QVERIFY2(QFileInfo(file).size() > 1000, qPrintable(file));
  }
  const QString csv = out.filePath(nv->figureBaseName() + ".csv");
  QVERIFY2(nv->exportCsv(csv, &err), qPrintable(err));
  QFile f(csv);
  QVERIFY(f.open(QIODevice::ReadOnly));
  const QString text = QString::fromUtf8(f.readAll());
  QVERIFY(text.count('\n') > 5);
  qInfo() << "exported" << nv->figureBaseName() << "csv lines" << text.count('\n');
}

}  // namespace

class TestNeuronView : public QObject {
  Q_OBJECT
  QString ws_;

 private Q_SLOTS:
  void initTestCase() {
    QString err;
    ws_ = test::studioTestWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  // The synthetic recording: the neuron page's histogram, categories,
  // neighbours and partitions against the raw arrays, a neighbour click, the
  // expert page against the labels and routeRecordedSamples, exports and the
  // fit at 1366x768. Its samples are synthetic (random tokens): the contexts
  // show the recorded tokens and say why.
  void pagesAgainstTheRecording() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    StudioContext* ctx = w.context();
    auto* nv = test::studioView<NeuronView>(w);
    QVERIFY(nv);
    w.tabs()->setCurrentWidget(nv);
    QCOMPARE(w.tabs()->tabText(w.tabs()->currentIndex()), QString("Neuron"));
    waitIdle(nv);
    // Nothing selected: the most frequent neuron, said in the header.
    QVERIFY(nv->hasData());
    QVERIFY(nv->showingDefaultNeuron());
    auto* header = nv->findChild<QLabel*>("neuronHeader");
    QVERIFY(header && header->text().contains("No neuron selected"));

    const QString recPath = ctx->paths("recording").value(0);
    const QString partPath = pathNamed(ctx, "partition", "coact-E16-s0");
    const QString routerPath = pathNamed(ctx, "router", "similarity-coact");
    QVERIFY(!partPath.isEmpty() && !routerPath.isEmpty());
    ctx->setCurrent("recording", recPath);
    ctx->setCurrent("partition", partPath);
    ctx->setCurrent("router", routerPath);
    const int L = 1, n = 42;
    ctx->selectNeuron(L, n);
    waitIdle(nv);
    QCOMPARE(nv->page(), NeuronView::NeuronPage);
    QCOMPARE(nv->shownLayer(), L);
    QCOMPARE(nv->shownNeuron(), n);
    QVERIFY(!nv->showingDefaultNeuron());

    auto rec = ctx->recording(recPath);
    auto part = ctx->partition(partPath);
    QVERIFY(rec && part);
    const int F = rec->widthOf(L);
    const auto& st = rec->stats.at(L);

    // Histogram: the active samples' activations in 30 equal bins up to their maximum.
    const auto act = rec->sampleAct(L);
    const auto& smp = rec->samples(L);
    const int S = static_cast<int>(smp.count());
    std::vector<float> v(static_cast<size_t>(S));
    float top = 0;
    qint64 inactive = 0;
    for (int i = 0; i < S; ++i) {
      v[size_t(i)] = (*act)[size_t(i) * F + n];
      if (v[size_t(i)] <= 0) ++inactive;
      top = std::max(top, v[size_t(i)]);
    }
    QVERIFY(top > 0);
    std::vector<qint64> counts(30, 0);
    for (float x : v)
      if (x > 0) ++counts[size_t(std::min(29, int(x / (double(top) / 30))))];
    QCOMPARE(nv->sampleCount(), qint64(S));
    QCOMPARE(nv->inactiveSamples(), inactive);
    QCOMPARE(nv->histogramCounts().size(), counts.size());
    qint64 histDiff = 0;
    for (size_t b = 0; b < counts.size(); ++b)
      histDiff = std::max(histDiff, std::abs(nv->histogramCounts()[b] - counts[b]));
    auto* bars = qobject_cast<QCPBars*>(nv->histogramPlot()->plottable(0));
    QVERIFY(bars);
    QCOMPARE(bars->data()->size(), 30);
    for (int b = 0; b < 30; ++b) QCOMPARE(qint64(std::lround((bars->data()->begin() + b)->value)), counts[size_t(b)]);
    qInfo() << "histogram: max count difference" << histDiff << "inactive" << inactive << "of" << S;
    QCOMPARE(histDiff, qint64(0));

    // Frequency by category: categoryCount / categoryTokens, bars in percent.
    auto* catBars = qobject_cast<QCPBars*>(nv->categoryPlot()->plottable(0));
    QVERIFY(catBars);
    double catDiff = 0;
    int drawn = 0;
    for (int c = 0; c < rec->categories.size(); ++c) {
      if (st.categoryTokens[size_t(c)] <= 0) continue;
      const double f = double(st.categoryCount[size_t(c) * F + n]) / double(st.categoryTokens[size_t(c)]);
      catDiff = std::max(catDiff, std::abs(nv->categoryFrequency()[size_t(c)] - f));
      catDiff = std::max(catDiff, std::abs((catBars->data()->begin() + drawn)->value - 100 * f) / 100);
      ++drawn;
    }
    QCOMPARE(catBars->data()->size(), drawn);
    qInfo() << "category frequency: max difference" << catDiff << "over" << drawn << "categories";
    QVERIFY(catDiff < 1e-12);

    // Neighbours: the coact row's 10 best by Jaccard (recomputed here).
    const auto C = rec->coact(L);
    struct Nb {
      int j;
      double c, jac, lift;
    };
    std::vector<Nb> all;
    const double T = double(rec->siteTokensOf(L));
    const double ci = (*C)[size_t(n) * F + n];
    for (int j = 0; j < F; ++j) {
      const double cij = (*C)[size_t(n) * F + j], cj = (*C)[size_t(j) * F + j];
      if (j == n || cij <= 0) continue;
      all.push_back({j, cij, cij / (ci + cj - cij), cij * T / (ci * cj)});
    }
    std::sort(all.begin(), all.end(), [](const Nb& a, const Nb& b) {
      return a.jac != b.jac ? a.jac > b.jac : a.c != b.c ? a.c > b.c : a.j < b.j;
    });
    const auto& nbs = nv->neighbours();
    QCOMPARE(int(nbs.size()), std::min<int>(10, int(all.size())));
    double nbDiff = 0;
    for (size_t r = 0; r < nbs.size(); ++r) {
      QCOMPARE(nbs[r].neuron, all[r].j);
      QCOMPARE(double(nbs[r].count), all[r].c);
      nbDiff = std::max({nbDiff, std::abs(nbs[r].jaccard - all[r].jac), std::abs(nbs[r].lift - all[r].lift)});
      QCOMPARE(nv->neighboursTable()->item(int(r), 0)->text(), QString::number(all[r].j));
      const bool same = part->labels.at(L)[size_t(all[r].j)] == part->labels.at(L)[size_t(n)];
      QVERIFY(nv->neighboursTable()->item(int(r), 4)->text().startsWith(same ? "yes" : "no"));
    }
    qInfo() << "neighbours: max Jaccard/lift difference" << nbDiff;
    QVERIFY(nbDiff < 1e-12);

    // Expert in every partition: labels[n] of each partition of the site.
    int partitions = 0;
    for (const QString& p : ctx->paths("partition")) {
      auto pp = ctx->partition(p);
      if (!pp || !pp->labels.count(L) || int(pp->labels.at(L).size()) != F) continue;
      bool found = false;
      for (const auto& row : nv->partitionRows())
        if (row.path == p) {
          found = true;
          QCOMPARE(row.expert, int(pp->labels.at(L)[size_t(n)]));
          QCOMPARE(row.expertSize, pp->sizes(L)[size_t(row.expert)]);
          QCOMPARE(row.experts, pp->experts);
        }
      QVERIFY2(found, qPrintable(p));
      ++partitions;
    }
    QCOMPARE(int(nv->partitionRows().size()), partitions);
    QCOMPARE(nv->partitionsTable()->rowCount(), partitions);
    qInfo() << "partitions listed" << partitions;

    // Contexts: the top recorded samples by activation; the synthetic tokens
    // are not the corpus's, so only the recorded tokens are shown, with why.
    const auto& ctxs = nv->contexts();
    QVERIFY(!ctxs.empty());
    std::vector<float> sorted = v;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (size_t r = 0; r < ctxs.size(); ++r) {
      QCOMPARE(ctxs[r].recorded, sorted[r]);
      QCOMPARE(ctxs[r].document, qint64(smp.docId[size_t(ctxs[r].sample)]));
      QVERIFY(!ctxs[r].fromModel);
    }
    qInfo() << "contexts caption:" << nv->contextsCaption();
    QVERIFY(nv->contextsCaption().startsWith("Recorded tokens only"));

    // Fits 1366x768; exports of the neuron page.
    checkFits(w, nv);
    const QDir out(QString::fromStdString(test::freshDir("gui_neuron_view").string()));
    exportBoth(nv, out);
    QVERIFY(w.grab().save(out.filePath("neuron-page-1366x768.png")));

    // Clicking a neighbour selects it.
    QTableWidget* nt = nv->neighboursTable();
    nv->findChild<QTabWidget*>("neuronTables")->setCurrentWidget(nt);
    QApplication::processEvents();
    const int pick = nbs[0].neuron;
    QTest::mouseClick(nt->viewport(), Qt::LeftButton, {}, nt->visualItemRect(nt->item(0, 0)).center());
    QCOMPARE(ctx->selectedNeuron(), pick);
    waitIdle(nv);
    QCOMPARE(nv->shownNeuron(), pick);

    // The expert page: another expert selected as such.
    const int e = (part->labels.at(L)[size_t(pick)] + 1) % part->experts;
    ctx->selectExpert(L, e);
    waitIdle(nv);
    QCOMPARE(nv->page(), NeuronView::ExpertPage);
    QCOMPARE(nv->shownExpert(), e);
    std::vector<int> members;
    for (int j = 0; j < F; ++j)
      if (part->labels.at(L)[size_t(j)] == e) members.push_back(j);
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return st.count[size_t(a)] > st.count[size_t(b)]; });
    QCOMPARE(nv->members(), members);
    QCOMPARE(nv->membersTable()->rowCount(), int(members.size()));
    // Usage: an independent count of the router's top-k on the samples.
    auto router = ctx->router(routerPath);
    QVERIFY(router);
    const int k = router->topKFor(L);
    const RouterChoices rc = routeRecordedSamples(*rec, router.get(), *part, L, k);
    QCOMPARE(nv->usageK(), k);
    QCOMPARE(int(nv->usageShare().size()), part->experts);
    double useDiff = 0;
    for (int x = 0; x < part->experts; ++x) {
      const double share = double(std::count(rc.top.begin(), rc.top.end(), x)) / (double(rc.samples) * k);
      useDiff = std::max(useDiff, std::abs(nv->usageShare()[size_t(x)] - share));
    }
    int oracleHas = 0, both = 0;
    for (int s = 0; s < rc.samples; ++s) {
      const auto o = rc.oracleTop.begin() + s * k, r = rc.top.begin() + s * k;
      if (std::find(o, o + k, e) == o + k) continue;
      ++oracleHas;
      both += std::find(r, r + k, e) != r + k;
    }
    const double recall = oracleHas ? double(both) / oracleHas : NAN;
    qInfo() << "usage: max share difference" << useDiff << "recall" << nv->expertRecall() << "expected" << recall;
    QVERIFY(useDiff < 1e-12);
    QVERIFY(oracleHas == 0 ? std::isnan(nv->expertRecall()) : std::abs(nv->expertRecall() - recall) < 1e-12);
    QVERIFY(nv->expertCaption().contains("recall"));
    // Category profile: the members' mean frequency per category over their mean overall.
    double overall = 0;
    for (int j : members) overall += double(st.count[size_t(j)]) / T;
    overall /= double(members.size());
    double profDiff = 0;
    for (int c = 0; c < rec->categories.size(); ++c) {
      if (st.categoryTokens[size_t(c)] <= 0) continue;
      double m = 0;
      for (int j : members) m += double(st.categoryCount[size_t(c) * F + j]) / double(st.categoryTokens[size_t(c)]);
      m /= double(members.size());
      profDiff = std::max(profDiff, std::abs(nv->categoryProfile()[size_t(c)] - m / overall));
    }
    qInfo() << "category profile: max difference" << profDiff;
    QVERIFY(profDiff < 1e-12);
    checkFits(w, nv);
    exportBoth(nv, out);
    QVERIFY(w.grab().save(out.filePath("expert-page-1366x768.png")));

    // A member click selects that neuron and shows its page.
    QTableWidget* mt = nv->membersTable();
    QTest::mouseClick(mt->viewport(), Qt::LeftButton, {}, mt->visualItemRect(mt->item(0, 0)).center());
    QCOMPARE(ctx->selectedNeuron(), members[0]);
    waitIdle(nv);
    QCOMPARE(nv->page(), NeuronView::NeuronPage);

    // A partition row picks that partition and shows the neuron's expert there.
    const auto rows = nv->partitionRows();
    const auto other = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.path != partPath; });
    QVERIFY(other != rows.end());
    QTableWidget* pt = nv->partitionsTable();
    nv->findChild<QTabWidget*>("neuronTables")->setCurrentWidget(pt);
    QApplication::processEvents();
    const int prow = int(other - rows.begin());
    const auto chosen = *other;
    QTest::mouseClick(pt->viewport(), Qt::LeftButton, {}, pt->visualItemRect(pt->item(prow, 0)).center());
    waitIdle(nv);
    QCOMPARE(ctx->current("partition"), chosen.path);
    QCOMPARE(ctx->selectedExpert(), chosen.expert);
    QCOMPARE(nv->page(), NeuronView::ExpertPage);
    QCOMPARE(nv->shownExpert(), chosen.expert);

    // The inspector's link opens this view.
    w.tabs()->setCurrentIndex(0);
    auto* inspector = w.findChild<QTextBrowser*>("neuronInspectorText");
    QVERIFY(inspector && inspector->toPlainText().contains("Open neuron page"));
    Q_EMIT inspector->anchorClicked(QUrl("moefy:neuron-page"));
    QCOMPARE(w.tabs()->currentWidget(), static_cast<QWidget*>(nv));
    QCOMPARE(w.issues()->count(), 0);
  }

  // A real recording (`moefy record` on the shared model and corpus): every
  // context's tokens are the document's, each token's shade is the neuron's
  // activation from an independent forward pass of the recorder's window
  // (and from TextProbe on the document for the first window), the sampled
  // token matches its recorded activation, and a click opens the document in
  // the Corpus view coloured by the same activations.
  void contextsFromTheModel() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(ws_, tmp);
    QVERIFY(!ws.isEmpty());
    const QString model = ws_ + "/model", corpusDir = ws_ + "/corpus";
    const int seqLen = 64;
    QVERIFY(test::runCliStep({"record", model, corpusDir, "--out", ws + "/recordings/rec", "--tokens", "1500",
                              "--seq-len", QString::number(seqLen), "--samples", "400"}));
    QVERIFY(test::runCliStep({"split", ws + "/recordings/rec", "--method", "random", "--experts", "8", "--seed", "1",
                              "--no-stability", "--out", ws + "/partitions/part"}));
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    StudioContext* ctx = w.context();
    auto* nv = test::studioView<NeuronView>(w);
    w.tabs()->setCurrentWidget(nv);
    const int L = 1;
    auto rec = ctx->recording(ctx->paths("recording").value(0));
    QVERIFY(rec);
    // The neuron with the most active samples (a busy one has ten contexts).
    const auto act = rec->sampleAct(L);
    const int F = rec->widthOf(L), S = int(rec->samples(L).count());
    int n = 0, best = -1;
    for (int j = 0; j < F; ++j) {
      int c = 0;
      for (int s = 0; s < S; ++s) c += (*act)[size_t(s) * F + j] > 0;
      if (c > best) best = c, n = j;
    }
    ctx->selectNeuron(L, n);
    waitIdle(nv);
    const auto& ctxs = nv->contexts();
    QCOMPARE(int(ctxs.size()), std::min(10, best));
    qInfo() << "contexts caption:" << nv->contextsCaption();

    const auto tokenizer = Tokenizer::fromModelDir(model.toStdString());
    const auto corpus = Corpus::open(corpusDir.toStdString());
    const auto m = Model::load(model.toStdString());
    const auto probe = TextProbe::open(ctx->sharedModel());
    double fwdDiff = 0, recDiff = 0, probeDiff = 0;
    int probed = 0;
    for (const auto& c : ctxs) {
      QVERIFY(c.fromModel);
      const std::string text = corpus->document(c.document).text;
      const std::vector<int32_t> ids = tokenizer->encode(text, true);
      QCOMPARE(ids[size_t(c.position)], c.tokenId);
      QCOMPARE(c.firstToken + c.sampleIndex, c.position);
      const qint64 w0 = c.position / seqLen * seqLen;
      QVERIFY(c.firstToken >= w0 && c.firstToken + qint64(c.tokens.size()) <= w0 + seqLen);
      const std::vector<float> col = windowedColumn(*m, ids, L, n, seqLen);
      for (size_t i = 0; i < c.tokens.size(); ++i) {
        QCOMPARE(c.tokens[i], ids[size_t(c.firstToken) + i]);
        fwdDiff = std::max(fwdDiff, double(std::abs(c.act[i] - col[size_t(c.firstToken) + i])));
      }
      // The recorded activation is F16.
      recDiff = std::max(recDiff, double(std::abs(c.act[size_t(c.sampleIndex)] - c.recorded)) /
                                      std::max(1.0, double(std::abs(c.recorded))));
      // TextProbe reads the document from its start: the same as the first window (a causal model).
      if (w0 == 0) {
        const TextActivations ta = probe->run(QString::fromStdString(text), L);
        for (size_t i = 0; i < c.tokens.size(); ++i)
          probeDiff = std::max(probeDiff, double(std::abs(c.act[i] - ta.act[(size_t(c.firstToken) + i) * ta.dFF + n])));
        ++probed;
      }
    }
    qInfo() << "contexts: max difference to an independent forward" << fwdDiff << "to TextProbe" << probeDiff << "("
            << probed << "contexts in the first window), to the recorded F16 activation (relative)" << recDiff;
    QVERIFY(fwdDiff < 1e-4);
    QVERIFY(probeDiff < 1e-4);
    QVERIFY(recDiff < 1e-2);
    // The shading scale is the largest activation shown.
    float topShown = 0;
    for (const auto& c : ctxs)
      for (float x : c.act) topShown = std::max(topShown, x);
    QCOMPARE(nv->contextScaleMax(), double(topShown));
    checkFits(w, nv);

    // A click on the first context opens its document in the Corpus view.
    QTest::mouseClick(nv->contextStrip(), Qt::LeftButton, {}, nv->contextRowRect(0).center());
    QCOMPARE(w.tabs()->tabText(w.tabs()->currentIndex()), QString("Corpus"));
    auto* cv = test::studioView<CorpusView>(w);
    QTRY_VERIFY_WITH_TIMEOUT(!cv->activationsRunning() && !cv->loading(), 60000);
    QApplication::processEvents();
    QCOMPARE(cv->shownActivationDocument(), ctxs[0].document);
    const std::vector<int32_t> ids = tokenizer->encode(corpus->document(ctxs[0].document).text, true);
    QCOMPARE(cv->shownTokens(), ids);
    const std::vector<float> col = windowedColumn(*m, ids, L, n, seqLen);
    QCOMPARE(cv->shownActivations().size(), col.size());
    double docDiff = 0;
    float docTop = 0;
    for (size_t i = 0; i < col.size(); ++i) {
      docDiff = std::max(docDiff, double(std::abs(cv->shownActivations()[i] - col[i])));
      docTop = std::max(docTop, col[i]);
    }
    qInfo() << "corpus view: document" << ctxs[0].document << "tokens" << ids.size() << "max activation difference"
            << docDiff;
    QVERIFY(docDiff < 1e-4);
    // Coloured tokens: the largest one in full orange, the sampled one bold and underlined.
    QVERIFY(cv->documentHtml().contains("background-color:" + activationShade(docTop, docTop).name()));
    QVERIFY(cv->documentHtml().contains("<a name='sample'></a><b><u>"));
    QCOMPARE(w.issues()->count(), 0);
  }

  // No recording: the empty state says what to do.
  void emptyStates() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(ws_, tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* nv = test::studioView<NeuronView>(w);
    w.tabs()->setCurrentWidget(nv);
    QApplication::processEvents();
    QVERIFY(!nv->hasData());
    bool said = false;
    for (QLabel* l : nv->findChildren<QLabel*>())
      said |= l->isVisible() && l->text().contains("Record activations") && l->text().contains("select a neuron");
    QVERIFY(said);
  }
};

QTEST_MAIN(TestNeuronView)
#include "test_neuron_view.moc"
