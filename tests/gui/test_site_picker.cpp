// Issue 13: the studio's FFN site picker on a T5 (encoder-decoder) workspace
// and on a native MoE (Mixtral) workspace.
// A small random T5 (scripts/ref/t5_ref.py make t5_relu) is recorded over
// teacher-forced pairs by the core (enc.blk.L and dec.blk.L sites) and split;
// the views must list the sites by name (enc.blk.0.., dec.blk.0..), draw the
// picked site's own data (dec.blk.1: the decoder's token count, its counts
// and co-activations, compared with the core reader), say in a label what a
// site cannot show (a typed text on a T5 site), and leave a dense workspace's
// picker as it was (blk.L items whose data is the layer). A native MoE
// recording (expert sites blk.L.exp.E, d_expert wide, each over the tokens
// routed to it) is listed by site name, and the sparsity, co-activation,
// expert-graph and router views draw the picked expert's own data (compared
// with the core reader).
#include "views/qcp.h"

#include <ATen/ATen.h>

#include <QApplication>
#include <QComboBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QTemporaryDir>
#include <QtTest>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/split/split.h"
#include "gui_fixture.h"
#include "studio_test_helpers.h"
#include "t5_pairs.h"
#include "t5_tokenizer.h"
#include "testutil.h"
#include "views/artefacts.h"
#include "views/figure.h"
#include "views/mainwindow.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;
namespace fs = std::filesystem;

namespace {

QStringList items(QComboBox* box) {
  QStringList out;
  for (int i = 0; i < box->count(); ++i) out << box->itemText(i);
  return out;
}

// The label of `view` whose text starts with `start` ("" if none).
QString labelStartingWith(QWidget* view, const QString& start) {
  for (QLabel* l : view->findChildren<QLabel*>())
    if (l->text().startsWith(start)) return l->text();
  return {};
}

// Opens `ws` in `w`, shown at 1366x768.
bool openAt1366(MainWindow& w, const QString& ws) {
  w.resize(1366, 768);
  w.show();
  return w.openWorkspace(ws);
}

// The window's view of type V, made the current tab (its pickers fill).
template <typename V>
V* showView(MainWindow& w) {
  V* v = test::studioView<V>(w);
  if (!v) return nullptr;
  w.tabs()->setCurrentWidget(v);
  QApplication::processEvents();
  return v;
}

void pickSite(FigureView* v, const QString& name) {
  const int i = v->layerCombo()->findText(name);
  QVERIFY2(i >= 0, qPrintable(name + " not in " + items(v->layerCombo()).join(", ")));
  v->layerCombo()->setCurrentIndex(i);
  QApplication::processEvents();
}

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

// A new workspace ROOT/ws named `name` on the model ROOT/model and `corpus`,
// saved; `dir` receives its folder.
views::Workspace saveWorkspace(const fs::path& root, const std::string& name, const fs::path& corpus, QString& dir) {
  dir = qs(root / "ws");
  views::Workspace w = views::Workspace::create(dir, QString::fromStdString(name), qs(root / "model"), qs(corpus));
  w.save();
  return w;
}

// Runs `moefy ARGS --quiet`; the test fails on a non-zero exit.
void cli(const QStringList& args) {
  auto r = test::runCli(QStringList(args) << "--quiet");
  QVERIFY2(r.exitCode == 0, (args.join(' ').toStdString() + "\n" + r.out + r.err).c_str());
}

// The Evaluation view on `ws`'s only evaluation: its CSV has a row per result
// of eval.json (`rows`), each with a finite perplexity.
void evaluationViewShows(MainWindow& w, int rows) {
  auto* ev = showView<EvalView>(w);
  QVERIFY(ev);
  QVERIFY(ev->hasData());
  const QStringList lines = ev->csvData().trimmed().split('\n');
  qInfo("Evaluation view CSV:\n%s", qPrintable(lines.join('\n')));
  QCOMPARE(lines.size(), 1 + rows);
  for (int i = 1; i < lines.size(); ++i) {
    bool ok = false;
    // router,fraction,"[top_k list]",loss,perplexity,...
    const double ppl = lines[i].section('"', 2).split(',').value(2).toDouble(&ok);
    QVERIFY2(ok && std::isfinite(ppl) && ppl > 1, qPrintable(lines[i]));
  }
}

}  // namespace

class TestSitePicker : public QObject {
  Q_OBJECT
  QTemporaryDir tmp_;
  QString ws_;  // the T5 workspace
  fs::path rec_;
  fs::path t5Eval_;  // its evaluation folder
  QString moeWs_;    // the native MoE (Mixtral) workspace
  fs::path moeRec_;

  // A small random Mixtral (4 experts x 48, top-2, 2 layers) recorded over
  // random ids, and its layer-1 experts split into 4 finer experts each.
  void makeNativeMoeWorkspace() {
    const fs::path root = fs::path(tmp_.path().toStdString()) / "moe";
    fs::create_directories(root);
    auto r =
        test::runPython({QString::fromStdString((test::sourceDir() / "scripts" / "ref" / "moe_native_ref.py").string()),
                         "make", "mixtral", QString::fromStdString((root / "model").string()), "--seed", "3"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    {
      std::ofstream corpus(root / "corpus.txt");
      corpus << "unused: the recording below is made from token ids\n";
    }
    views::Workspace w = saveWorkspace(root, "mixtral", root / "corpus.txt", moeWs_);
    auto model = Model::load(root / "model");
    QCOMPARE(model->config().expertCount, 4);
    std::vector<Sequence> seqs;
    uint32_t x = 7;
    for (int d = 0; d < 24; ++d) {
      Sequence s;
      s.docId = d;
      for (int t = 0; t < 16; ++t) s.ids.push_back(static_cast<int32_t>((x = x * 1103515245u + 12345u) >> 16) % 101);
      seqs.push_back(s);
    }
    SequenceSource source = [seqs](const std::function<bool(const Sequence&)>& fn) {
      for (const auto& s : seqs)
        if (!fn(s)) return;
    };
    JobContext job;
    RecordOptions o;
    o.batch = 4;
    o.samples = 256;
    o.seqLen = 16;
    moeRec_ = fs::path(w.folder("recordings").toStdString()) / "rec-mixtral";
    recordActivations(*model, source, SourceInfo{"ids", "tokens", {}, ""}, o, moeRec_, job);
    moefy::Recording rec = moefy::Recording::open(moeRec_);
    QVERIFY(rec.nativeMoe());
    SplitOptions so;
    so.method = "coact";
    so.experts = 4;
    so.stability = false;
    so.sites = {"blk.1"};
    const fs::path part = fs::path(w.folder("partitions").toStdString()) / "experts-l1-E4";
    runSplit(rec, model.get(), so, part, job);
    // A router and an evaluation of the finer experts (moefy route / eval on expert sites).
    const fs::path router = fs::path(w.folder("routers").toStdString()) / "sim-k2";
    cli({"route", qs(root / "model"), qs(moeRec_), qs(part), "--router", "similarity", "--top-k", "2", "--out",
         qs(router)});
    {
      std::ofstream ids(root / "heldout.ids");
      for (int d = 0; d < 8; ++d) {
        for (int t = 0; t < 16; ++t) ids << ((d * 37 + t * 11) % 101) << ' ';
        ids << '\n';
      }
    }
    cli({"eval", qs(root / "model"), qs(root / "heldout.ids"), "--partition", qs(part), "--router", qs(router),
         "--sweep", "0.5,1", "--out", qs(fs::path(w.folder("evaluations").toStdString()) / "sim-k2")});
  }

 private Q_SLOTS:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QVERIFY(tmp_.isValid());
    const fs::path root = tmp_.path().toStdString();
    auto r = test::runPython({QString::fromStdString((test::sourceDir() / "scripts" / "ref" / "t5_ref.py").string()),
                              "make", "t5_relu", QString::fromStdString((root / "model").string())});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    {
      std::ofstream corpus(root / "pairs.tsv");
      corpus << "a b c\tx y\n";
    }
    // A T5-shaped tokenizer (pieces a0..a97) and a parallel corpus in its words, for `moefy eval`.
    std::vector<std::pair<std::string, double>> pieces;
    for (int i = 0; i < 98; ++i) pieces.emplace_back("\u2581a" + std::to_string(i), -1.0);
    test::writeT5Tokenizer(root / "model" / "tokenizer.json", pieces);
    {
      std::ofstream pairs(root / "eval.tsv");
      for (int i = 0; i < 6; ++i) {
        for (int t = 0; t < 3 + i % 3; ++t) pairs << (t ? " " : "") << "a" << (i * 7 + t * 3) % 98;
        pairs << '\t';
        for (int t = 0; t < 2 + i % 2; ++t) pairs << (t ? " " : "") << "a" << (i * 5 + t * 13) % 98;
        pairs << '\n';
      }
    }
    views::Workspace w = saveWorkspace(root, "t5", root / "pairs.tsv", ws_);
    auto model = Model::load(root / "model");
    QVERIFY(model->config().encoderDecoder);
    JobContext job;
    RecordOptions o;
    o.batch = 2;
    o.samples = 64;
    o.seqLen = 16;
    rec_ = fs::path(w.folder("recordings").toStdString()) / "rec-t5";
    recordSeq2SeqActivations(*model, test::t5Pairs(4), SourceInfo{"pairs", "parallel-test", {}, ""}, o, rec_, job);
    moefy::Recording rec = moefy::Recording::open(rec_);
    QCOMPARE(static_cast<int>(rec.sites().size()), 4);
    SplitOptions so;
    so.method = "coact";
    so.experts = 4;
    so.stability = false;
    const fs::path part = fs::path(w.folder("partitions").toStdString()) / "coact-E4";
    runSplit(rec, model.get(), so, part, job);
    // A router and a teacher-forced evaluation of the T5 MoE (every site group).
    const fs::path router = fs::path(w.folder("routers").toStdString()) / "sim-k2";
    cli({"route", qs(root / "model"), qs(rec_), qs(part), "--router", "similarity", "--top-k", "2", "--out",
         qs(router)});
    t5Eval_ = fs::path(w.folder("evaluations").toStdString()) / "sim-k2";
    cli({"eval", qs(root / "model"), qs(root / "eval.tsv"), "--split", "all", "--partition", qs(part), "--router",
         qs(router), "--out", qs(t5Eval_)});
  }

  // The Evaluation view reads a T5 evaluation (site groups enc, dec, both).
  void t5EvaluationShows() {
    MainWindow w;
    QVERIFY(openAt1366(w, ws_));
    const nlohmann::json j = nlohmann::json::parse(readFile(t5Eval_ / "eval.json"));
    evaluationViewShows(w, static_cast<int>(j["results"].size()));
    // One series per site group: the MoE in the encoder only, the decoder only, or both.
    auto* ev = test::studioView<EvalView>(w);
    for (const char* g : {"similarity (enc),", "similarity (dec),", "similarity (both),"})
      QVERIFY2(ev->csvData().contains(QString("\n") + g), qPrintable(ev->csvData()));
    if (qEnvironmentVariableIsSet("MOEFY_SCREENSHOTS")) {
      const QStringList files =
          w.writeScreenshots(qEnvironmentVariable("MOEFY_SCREENSHOTS") + "/t5-evaluation", QSize(1366, 768));
      QVERIFY(!files.isEmpty());
    }
  }

  // The picker lists the T5 sites by name, in forward order, with their site indices.
  void pickerListsStacks() {
    MainWindow w;
    QVERIFY(openAt1366(w, ws_));
    auto* sv = showView<SparsityView>(w);
    QVERIFY(sv);
    const QStringList want = {"enc.blk.0", "enc.blk.1", "dec.blk.0", "dec.blk.1"};
    QCOMPARE(items(sv->layerCombo()), want);
    for (int i = 0; i < want.size(); ++i) QCOMPARE(sv->layerCombo()->itemData(i).toInt(), i);  // site indices
    for (FigureView* v : {static_cast<FigureView*>(test::studioView<CoactView>(w)),
                          static_cast<FigureView*>(test::studioView<ExpertGraphView>(w)),
                          static_cast<FigureView*>(test::studioView<RouterView>(w)),
                          static_cast<FigureView*>(test::studioView<PartitionView>(w))}) {
      QVERIFY(v);
      w.tabs()->setCurrentWidget(v);
      QApplication::processEvents();
      if (auto* gv = qobject_cast<ExpertGraphView*>(v)) QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning(), 20000);
      QCOMPARE(items(v->layerCombo()), want);
    }
    // The Partitions view on dec.blk.1: the metrics partition.json keys by site name fill the table.
    auto* pv = showView<PartitionView>(w);
    QVERIFY(pv);
    pickSite(pv, "dec.blk.1");
    const QString row = pv->csvData().section('\n', 1, 1);
    QVERIFY2(row.startsWith("coact-E4,coact,") && !row.contains(",-"), qPrintable(pv->csvData()));
    // The Model view: the stacks line from the core (describeModelFiles).
    auto* mv = showView<ModelView>(w);
    QVERIFY(mv);
    const QString stacks = "stack_summary,\"encoder: 2 layers, enc.blk.0-1; decoder: 2 layers, dec.blk.0-1\"";
    QTRY_VERIFY2_WITH_TIMEOUT(mv->csvData().contains(stacks), qPrintable(mv->csvData()), 20000);
  }

  // dec.blk.1: the sparsity view draws that site's counts over the decoder's
  // tokens, the co-activation view that site's matrix.
  void decoderSiteShowsItsData() {
    moefy::Recording core = moefy::Recording::open(rec_);
    const int L = core.layerOf(Site::parse("dec.blk.1"));
    QCOMPARE(L, 3);
    const int64_t T = core.tokens(L);
    QCOMPARE(T, int64_t{44});  // 4 x (5 + 2 + 4) decoder tokens: not the encoder's 60, not the total
    const at::Tensor count = core.count(L).to(at::kDouble);
    const int F = core.dFF();
    const double meanShare = count.sum().item<double>() / (double(T) * F);  // mean active share per token
    const int64_t dead = (count == 0).sum().item<int64_t>();
    QVERIFY(count.sum().item<double>() > 0);

    MainWindow w;
    QVERIFY(openAt1366(w, ws_));
    auto* sv = showView<SparsityView>(w);
    QVERIFY(sv);
    pickSite(sv, "dec.blk.1");
    QCOMPARE(sv->layer(), 3);
    QCOMPARE(sv->figureBaseName(), QString("sparsity-dec.blk.1"));
    const QString note = labelStartingWith(sv, "Recording:");
    const QString want = QString(
                             "Recording: %1 tokens, d_ff %2. dec.blk.1: %3% of neurons active per token on average; "
                             "%4 dead")
                             .arg(T)
                             .arg(F)
                             .arg(meanShare * 100, 0, 'f', 1)
                             .arg(dead);
    qInfo("sparsity note: %s", qPrintable(note));
    QVERIFY2(note.startsWith(want), qPrintable(note + "\nwant: " + want));

    // The co-activation view on dec.blk.1: its colour scale tops at that
    // site's largest off-diagonal count.
    auto* cv = showView<CoactView>(w);
    QVERIFY(cv);
    pickSite(cv, "dec.blk.1");
    QVERIFY(cv->hasData());
    QCOMPARE(cv->figureBaseName(), QString("co-activation-dec.blk.1"));
    at::Tensor C = core.coact(L).to(at::kDouble).clone();
    C.fill_diagonal_(0);
    const double vmax = std::max(1.0, C.max().item<double>());
    qInfo("dec.blk.1 co-activation max off-diagonal: core %g, view %g", vmax, cv->colourMax());
    QCOMPARE(cv->colourMax(), vmax);
    // The selection follows the site index: a neuron picked on dec.blk.1 moves the sparsity view there.
    pickSite(sv, "enc.blk.0");
    w.context()->selectNeuron(3, 0);
    QApplication::processEvents();
    QCOMPARE(sv->layerCombo()->currentText(), QString("dec.blk.1"));
    // MOEFY_SCREENSHOTS=DIR: every view of the T5 workspace on dec.blk.1 at
    // 1366x768, as DIR/t5-site-picker/NN-<view>.png (for the figures).
    if (qEnvironmentVariableIsSet("MOEFY_SCREENSHOTS")) {
      const QString dir = qEnvironmentVariable("MOEFY_SCREENSHOTS") + "/t5-site-picker";
      const QStringList files = w.writeScreenshots(dir, QSize(1366, 768));
      QVERIFY2(!files.isEmpty(), qPrintable(dir));
      qInfo("screenshots: %s", qPrintable(files.join(", ")));
    }
  }

  // A typed text on a T5 site is a source sentence: the dense model
  // translates it, and the Router view routes the translation's decoder
  // tokens (dec.blk) or the source tokens (enc.blk), naming the translation.
  void routerTranslatesTypedSourceOnT5Sites() {
    MainWindow w;
    QVERIFY(openAt1366(w, ws_));
    auto* rv = showView<RouterView>(w);
    QVERIFY(rv);
    pickSite(rv, "dec.blk.1");
    QVERIFY(rv->hasData());
    QVERIFY(!rv->findChild<QLabel*>("routeTextNote")->isVisible());
    QVERIFY(rv->findChild<QLineEdit*>("routeText")->isEnabled());
    QVERIFY(rv->findChild<QPushButton*>("runText")->isEnabled());
    rv->runText("the cat sat on the mat");
    QTRY_VERIFY_WITH_TIMEOUT(!rv->textRunning() && rv->typedTokens() > 0, 60000);
    QApplication::processEvents();
    QVERIFY(rv->typedDecoderRows());
    QVERIFY(rv->showingTypedText());
    QCOMPARE(rv->heatmapRows(), rv->typedTokens());  // one row per generated token
    auto* doc = rv->findChild<QComboBox*>("documentPicker");
    QVERIFY(doc);
    QVERIFY2(doc->currentText().startsWith("typed source, translation"), qPrintable(doc->currentText()));
    qInfo("dec.blk.1: %d generated tokens, translation '%s'", rv->typedTokens(), qPrintable(rv->typedTranslation()));
    // The encoder site routes the source tokens (the text is run again for it).
    pickSite(rv, "enc.blk.0");
    QTRY_VERIFY_WITH_TIMEOUT(!rv->textRunning() && rv->typedTokens() > 0 && !rv->typedDecoderRows(), 60000);
    QApplication::processEvents();
    QCOMPARE(rv->heatmapRows(), rv->typedTokens());
    QVERIFY2(labelStartingWith(rv, "Router ").contains("enc.blk.0: top-"),
             qPrintable(labelStartingWith(rv, "Router ")));
  }

  // A native MoE workspace: the picker lists the expert sites by name; the
  // picked expert's sparsity note counts the tokens routed to it and its
  // width (d_expert), the co-activation view draws its matrix, and the
  // router view routes the sampled tokens routed to it into its finer experts.
  void nativeMoeSitesShowTheirData() {
    makeNativeMoeWorkspace();
    moefy::Recording core = moefy::Recording::open(moeRec_);
    MainWindow w;
    QVERIFY(openAt1366(w, moeWs_));
    auto* sv = showView<SparsityView>(w);
    QVERIFY(sv);
    QStringList want;
    for (const Site& site : core.sites()) want << QString::fromStdString(site.name());
    QCOMPARE(want.size(), 8);  // blk.0.exp.0-3, blk.1.exp.0-3
    QCOMPARE(items(sv->layerCombo()), want);
    const int L = core.layerOf(Site::parse("blk.1.exp.2"));
    QVERIFY(L >= 0);
    pickSite(sv, "blk.1.exp.2");
    QCOMPARE(sv->layer(), L);
    const int64_t T = core.siteTokens(L);
    const int F = core.width(L);
    QCOMPARE(F, 48);
    QVERIFY(T > 0 && T < core.tokens());  // the routed tokens, not the stream's
    const at::Tensor count = core.count(L).to(at::kDouble);
    const double meanShare = count.sum().item<double>() / (double(T) * F);
    const QString note = labelStartingWith(sv, "Recording:");
    const QString noteWant =
        QString("Recording: %1 tokens routed to the expert, d_expert %2. blk.1.exp.2: %3% of neurons")
            .arg(T)
            .arg(F)
            .arg(meanShare * 100, 0, 'f', 1);
    qInfo("native MoE sparsity note: %s", qPrintable(note));
    QVERIFY2(note.startsWith(noteWant), qPrintable(note + "\nwant: " + noteWant));
    QCOMPARE(sv->csvData().count('\n'), 1 + 8 * F);  // header + every neuron of every site at its own width

    auto* cv = showView<CoactView>(w);
    QVERIFY(cv);
    pickSite(cv, "blk.1.exp.2");
    QVERIFY(cv->hasData());
    at::Tensor C = core.coact(L).to(at::kDouble).clone();
    QCOMPARE(C.size(0), int64_t{F});
    C.fill_diagonal_(0);
    const double vmax = std::max(1.0, C.max().item<double>());
    qInfo("blk.1.exp.2 co-activation max off-diagonal: core %g, view %g", vmax, cv->colourMax());
    QCOMPARE(cv->colourMax(), vmax);

    // The expert graph and the router view list the partition's sites (layer 1's experts).
    const QStringList partSites = {"blk.1.exp.0", "blk.1.exp.1", "blk.1.exp.2", "blk.1.exp.3"};
    auto* gv = showView<ExpertGraphView>(w);
    QVERIFY(gv);
    QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning(), 20000);
    QCOMPARE(items(gv->layerCombo()), partSites);
    auto* rv = showView<RouterView>(w);
    QVERIFY(rv);
    QCOMPARE(items(rv->layerCombo()), partSites);
    pickSite(rv, "blk.1.exp.2");
    QVERIFY(rv->hasData());
    // One CSV row per sampled token routed to the expert (the first table;
    // the router diagnostics follow after a blank line).
    const int64_t routed = (core.sampleRouted(L).to(at::kInt) != 0).sum().item<int64_t>();
    QVERIFY(routed > 0 && routed < core.sampleCount());
    QCOMPARE(static_cast<int64_t>(rv->csvData().section("\n\n", 0, 0).count('\n')), routed);
    QVERIFY(!rv->findChild<QLineEdit*>("routeText")->isEnabled());  // typed text: whole-token sites only
    evaluationViewShows(w, 2);                                      // the finer experts at half and all of them
    // The Partitions view lists the expert partition with its recall@k curve.
    auto* pv = showView<PartitionView>(w);
    QVERIFY(pv);
    QVERIFY(pv->hasData());
    // Its metrics (keyed by site name in partition.json) fill the table: no "-" cells.
    const QString row = pv->csvData().section('\n', 1, 1);
    QVERIFY2(row.startsWith("experts-l1-E4,coact,") && !row.contains(",-"), qPrintable(pv->csvData()));
    QVERIFY2(pv->csvData().contains("\nexperts-l1-E4,1,0.25,"), qPrintable(pv->csvData()));  // k=1 of 4 finer experts
    if (qEnvironmentVariableIsSet("MOEFY_SCREENSHOTS")) {
      const QString dir = qEnvironmentVariable("MOEFY_SCREENSHOTS") + "/native-moe-site-picker";
      const QStringList files = w.writeScreenshots(dir, QSize(1366, 768));
      QVERIFY2(!files.isEmpty(), qPrintable(dir));
      qInfo("screenshots: %s", qPrintable(files.join(", ")));
    }
  }

  // A dense workspace keeps its picker: blk.L items whose data is the layer,
  // the "-L<layer>" export stem and the "Layer L" note.
  void densePickerUnchanged() {
    QString err;
    const QString ws = test::studioTestWorkspace(&err);
    QVERIFY2(!ws.isEmpty(), qPrintable(err));
    MainWindow w;
    QVERIFY(openAt1366(w, ws));
    auto* sv = showView<SparsityView>(w);
    QVERIFY(sv);
    auto rec = w.context()->recording(w.context()->paths("recording").front());
    QVERIFY(rec);
    QCOMPARE(sv->layerCombo()->count(), static_cast<int>(rec->layers.size()));
    for (int i = 0; i < sv->layerCombo()->count(); ++i) {
      QCOMPARE(sv->layerCombo()->itemText(i), QString("blk.%1").arg(rec->layers[i]));
      QCOMPARE(sv->layerCombo()->itemData(i).toInt(), rec->layers[i]);
    }
    const int L = rec->layers.back();
    pickSite(sv, QString("blk.%1").arg(L));
    QCOMPARE(sv->figureBaseName(), QString("sparsity-L%1").arg(L));
    const QString note = labelStartingWith(sv, "Recording:");
    QVERIFY2(
        note.startsWith(QString("Recording: %1 tokens, d_ff %2. Layer %3: ").arg(rec->tokens).arg(rec->dFF).arg(L)),
        qPrintable(note));
    auto* rv = showView<RouterView>(w);
    QVERIFY(rv);
    if (rv->hasData()) {
      QVERIFY(rv->findChild<QLineEdit*>("routeText")->isEnabled());
      QVERIFY(!rv->findChild<QLabel*>("routeTextNote")->isVisible());
    }
  }
};

QTEST_MAIN(TestSitePicker)
#include "test_site_picker.moc"
