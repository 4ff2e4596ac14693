// Issue 20, "what researchers reach for first": the Compare view overlays
// every evaluation of the workspace. Hand-written eval.json files with known
// values (two on the same data, one on other data; layer_rel_error with a
// null; speed spreads; an oracle without timings or FLOP fraction) are
// checked against what the view draws: curve points, stable colours, spread
// bars, the FLOP axis, heatmap cells, the table, the CSV, the hover text, the
// different-data warning, the fit in a 1366x768 window and the exports; then
// the default check of the newest evaluations, the empty state and a damaged
// eval.json.
#include "views/qcp.h"

#include <QApplication>
#include <QComboBox>
#include <QDateTime>
#include <QFile>
#include <QFileInfo>
#include <QHeaderView>
#include <QListWidget>
#include <QScrollBar>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QToolTip>
#include <QtTest>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "gui_fixture.h"
#include "studio_test_helpers.h"
#include "views/artefacts.h"
#include "views/figure.h"
#include "views/mainwindow.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;
using json = nlohmann::json;

namespace {

json speed(double fwd, double fwdLo, double fwdHi, double gen, double genLo, double genHi) {
  return {{"forward_tokens_per_s", 1000 * fwd}, {"dense_forward_tokens_per_s", 1000.0}, {"forward_speedup", fwd},
          {"forward_speedup_min", fwdLo},       {"forward_speedup_max", fwdHi},         {"forward_runs", 5},
          {"generate_tokens_per_s", 50 * gen},  {"dense_generate_tokens_per_s", 50.0},  {"generate_speedup", gen},
          {"generate_speedup_min", genLo},      {"generate_speedup_max", genHi},        {"generate_runs", 3}};
}

/// One result; `flops` and `speedBlock` null when not recorded.
json result(const std::string& router, double fraction, double ppl, double top1, double kl, const json& flops,
            const json& layerError, const json& speedBlock) {
  json r = {{"router", router},
            {"name", router},
            {"fraction", fraction},
            {"loss", std::log(ppl)},
            {"perplexity", ppl},
            {"top1_agreement", top1},
            {"kl", kl},
            {"layer_rel_error", layerError},
            {"positions", 4000}};
  if (!flops.is_null()) r["ffn_flops_fraction"] = flops;
  if (!speedBlock.is_null())
    r["speed"] = speedBlock;
  else
    r["speed_note"] = "oracle routers need the dense hidden: not timed";
  return r;
}

json evalDoc(const QString& corpus, const std::string& split, double densePpl, const json& results) {
  return {{"format", "moefy-eval"},
          {"version", 2},
          {"seed", 0},
          {"model", {{"path", ""}, {"fingerprint", "0123456789abcdef"}}},
          {"corpus",
           {{"path", corpus.toStdString()},
            {"split", split},
            {"split_seed", 0},
            {"held_out_fraction", 0.05},
            {"sequences", 32},
            {"tokens", 4000},
            {"seq_len", 128}}},
          {"reference", {{"loss", std::log(densePpl)}, {"perplexity", densePpl}}},
          {"results", results}};
}

void writeJson(const QString& path, const json& j) {
  QDir().mkpath(QFileInfo(path).absolutePath());
  std::ofstream(path.toStdString()) << j.dump(1);
}

double num(const json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }

/// Two evaluations on the same data ("a-mlp": mlp and an untimed oracle
/// without FLOP fraction; "b-sim": similarity) and one on other data ("c-other").
std::map<std::string, json> writeEvaluations(const QString& ws) {
  const QString corpus = ws + "/corpus-heldout", other = ws + "/corpus-other";
  std::map<std::string, json> docs;
  docs["a-mlp"] = evalDoc(
      corpus, "heldout", 20.0,
      json::array({result("mlp", 0.25, 30.0, 0.7, 0.4, 0.3, {0.6, 0.2, 0.1}, speed(1.8, 1.6, 2.0, 1.3, 1.2, 1.45)),
                   result("mlp", 0.5, 24.0, 0.8, 0.2, 0.55, {0.4, 0.1, 0.05}, speed(1.4, 1.3, 1.5, 1.1, 1.0, 1.2)),
                   result("oracle", 0.25, 22.0, 0.9, 0.1, nullptr, {0.5, nullptr, 0.05}, nullptr)}));
  docs["b-sim"] = evalDoc(
      corpus, "heldout", 20.0,
      json::array(
          {result("similarity", 0.25, 35.0, 0.6, 0.5, 0.28, {0.7, 0.3, 0.2}, speed(1.9, 1.7, 2.1, 1.35, 1.2, 1.5)),
           result("similarity", 0.5, 26.0, 0.75, 0.3, 0.52, {0.45, 0.15, 0.1}, speed(1.5, 1.4, 1.6, 1.1, 1.0, 1.2))}));
  docs["c-other"] = evalDoc(
      other, "all", 25.0,
      json::array({result("mlp", 0.25, 40.0, 0.65, 0.45, 0.3, {0.3, 0.3, 0.3}, speed(1.8, 1.7, 1.9, 1.2, 1.1, 1.3)),
                   result("mlp", 0.5, 30.0, 0.8, 0.25, 0.55, {0.2, 0.2, 0.2}, speed(1.4, 1.3, 1.5, 1.1, 1.0, 1.2))}));
  for (const auto& [name, doc] : docs)
    writeJson(ws + "/evaluations/" + QString::fromStdString(name) + "/eval.json", doc);
  return docs;
}

QListWidgetItem* itemOf(QListWidget* list, const QString& name) {
  for (int i = 0; i < list->count(); ++i)
    if (list->item(i)->text().startsWith(name)) return list->item(i);
  return nullptr;
}

void settle() {
  for (int i = 0; i < 5; ++i) QApplication::processEvents();
}

void replot(CompareView* cv) {
  settle();
  cv->curvePlot()->replot(QCustomPlot::rpImmediateRefresh);
  cv->heatmapPlot()->replot(QCustomPlot::rpImmediateRefresh);
}

}  // namespace

class TestCompare : public QObject {
  Q_OBJECT
  QString shared_;

 private Q_SLOTS:
  void initTestCase() {
    QString err;
    shared_ = test::studioTestWorkspace(&err);
    QVERIFY2(!shared_.isEmpty(), qPrintable(err));
  }

  void comparesEvaluationsAsTheFilesSay() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(shared_, tmp);
    QVERIFY(!ws.isEmpty());
    const std::map<std::string, json> docs = writeEvaluations(ws);
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* cv = test::studioView<CompareView>(w);
    QVERIFY(cv);
    // The tab follows Evaluation.
    const int at = w.tabs()->indexOf(cv);
    QCOMPARE(w.tabs()->tabText(at), QString("Compare"));
    QCOMPARE(w.tabs()->tabText(at - 1), QString("Evaluation"));
    w.tabs()->setCurrentWidget(cv);
    replot(cv);
    QVERIFY(cv->hasData());
    QListWidget* list = cv->evaluationList();
    QCOMPARE(list->count(), 3);
    for (int i = 0; i < list->count(); ++i) QCOMPARE(list->item(i)->checkState(), Qt::Checked);  // 3 <= 6: all

    // Different data: the amber line names the evaluations on each.
    QVERIFY(cv->dataWarningShown());
    QVERIFY(cv->dataWarning()->isVisible());
    const QString warning = cv->dataWarning()->text();
    qInfo() << "warning:" << warning;
    QVERIFY(warning.contains("not on the same data"));
    QVERIFY(warning.contains("a-mlp, b-sim") && warning.contains("c-other"));
    QVERIFY(cv->curveCaption().contains("not on the same data"));
    itemOf(list, "c-other")->setCheckState(Qt::Unchecked);
    replot(cv);
    QVERIFY(!cv->dataWarningShown());
    QVERIFY(!cv->dataWarning()->isVisible());
    QVERIFY2(cv->curveCaption().startsWith("data: held-out split of corpus-heldout"), qPrintable(cv->curveCaption()));

    // Curves (perplexity ratio over k/E): one per (evaluation, router), each
    // point as the file says.
    auto expected = [&](const CompareView::Curve& c, int metric, bool flops) {
      const json& doc = docs.at(c.evaluation.toStdString());
      const double dense = doc["reference"]["perplexity"].get<double>();
      std::vector<std::pair<double, double>> pts;
      for (const json& r : doc["results"]) {
        if (r["router"] != c.router.toStdString()) continue;
        const double x = flops ? (r.contains("ffn_flops_fraction") ? num(r["ffn_flops_fraction"]) : std::nan(""))
                               : num(r["fraction"]);
        double y = std::nan("");
        switch (metric) {
          case CompareView::PerplexityRatio:
            y = dense / num(r["perplexity"]);
            break;
          case CompareView::Perplexity:
            y = num(r["perplexity"]);
            break;
          case CompareView::Top1:
            y = num(r["top1_agreement"]);
            break;
          case CompareView::Kl:
            y = num(r["kl"]);
            break;
          case CompareView::ForwardSpeedup:
            y = r.contains("speed") ? num(r["speed"]["forward_speedup"]) : y;
            break;
          default:
            y = r.contains("speed") ? num(r["speed"]["generate_speedup"]) : y;
        }
        if (!std::isnan(x) && !std::isnan(y)) pts.push_back({x, y});
      }
      std::sort(pts.begin(), pts.end());
      return pts;
    };
    auto checkCurves = [&](int metric, bool flops) {
      double maxDiff = 0;
      for (const CompareView::Curve& c : cv->curves()) {
        const auto want = expected(c, metric, flops);
        const auto data = c.graph->data();
        if (data->size() != int(want.size()))
          return QString("%1: %2 points, expected %3").arg(c.graph->name()).arg(data->size()).arg(want.size());
        for (int i = 0; i < data->size(); ++i)
          maxDiff = std::max({maxDiff, std::fabs(data->at(i)->key - want[size_t(i)].first),
                              std::fabs(data->at(i)->value - want[size_t(i)].second)});
      }
      qInfo() << "metric" << metric << (flops ? "FLOP axis" : "k/E axis") << "curves" << cv->curves().size()
              << "max |drawn - eval.json|" << maxDiff;
      return maxDiff < 1e-12 ? QString() : QString("max difference %1").arg(maxDiff);
    };
    QCOMPARE(int(cv->curves().size()), 3);  // a-mlp: mlp, oracle; b-sim: similarity
    for (int metric : {CompareView::PerplexityRatio, CompareView::Perplexity, CompareView::Top1, CompareView::Kl}) {
      cv->metricCombo()->setCurrentIndex(cv->metricCombo()->findData(metric));
      replot(cv);
      QCOMPARE(int(cv->curves().size()), 3);
      const QString why = checkCurves(metric, false);
      QVERIFY2(why.isEmpty(), qPrintable(why));
    }
    cv->metricCombo()->setCurrentIndex(cv->metricCombo()->findData(CompareView::Perplexity));
    replot(cv);
    QCOMPARE(cv->curvePlot()->yAxis->scaleType(), QCPAxis::stLogarithmic);
    cv->metricCombo()->setCurrentIndex(cv->metricCombo()->findData(CompareView::PerplexityRatio));
    replot(cv);
    QCOMPARE(cv->curvePlot()->yAxis->scaleType(), QCPAxis::stLinear);

    // Styles stay with their series when another evaluation is checked.
    auto styles = [cv] {
      std::map<QString, std::pair<QColor, Qt::PenStyle>> out;
      for (const CompareView::Curve& c : cv->curves())
        out[c.dir + "|" + c.router] = {c.graph->pen().color(), c.graph->pen().style()};
      return out;
    };
    itemOf(list, "b-sim")->setCheckState(Qt::Unchecked);
    replot(cv);
    QCOMPARE(int(cv->curves().size()), 2);
    const auto before = styles();
    itemOf(list, "b-sim")->setCheckState(Qt::Checked);
    itemOf(list, "c-other")->setCheckState(Qt::Checked);
    replot(cv);
    const auto after = styles();
    QCOMPARE(int(after.size()), 4);
    for (const auto& [key, style] : before) {
      QVERIFY2(after.count(key), qPrintable(key));
      QVERIFY2(after.at(key) == style, qPrintable(key + " changed its colour or dash"));
    }
    std::set<QRgb> colours;
    for (const auto& [key, style] : after) colours.insert(style.first.rgb());
    QCOMPARE(int(colours.size()), 4);  // each curve its own colour
    itemOf(list, "c-other")->setCheckState(Qt::Unchecked);
    replot(cv);

    // Speed: the oracle (no timings) is left out and named; the bars span min-max.
    for (int metric : {CompareView::ForwardSpeedup, CompareView::GenerateSpeedup}) {
      cv->metricCombo()->setCurrentIndex(cv->metricCombo()->findData(metric));
      replot(cv);
      QCOMPARE(int(cv->curves().size()), 2);
      QVERIFY2(cv->curveCaption().contains("no timings") && cv->curveCaption().contains("oracle"),
               qPrintable(cv->curveCaption()));
      const QString why = checkCurves(metric, false);
      QVERIFY2(why.isEmpty(), qPrintable(why));
      double maxDiff = 0;
      const char* key = metric == CompareView::ForwardSpeedup ? "forward_speedup" : "generate_speedup";
      for (const CompareView::Curve& c : cv->curves()) {
        QVERIFY(c.bars);
        const json& doc = docs.at(c.evaluation.toStdString());
        int i = 0;
        for (const json& r : doc["results"]) {  // ascending fraction in these files, as the graph's order
          if (r["router"] != c.router.toStdString()) continue;
          const double v = c.graph->data()->at(i)->value;
          const QCPErrorBarsData e = c.bars->data()->at(i);
          maxDiff = std::max({maxDiff, std::fabs(v - e.errorMinus - num(r["speed"][std::string(key) + "_min"])),
                              std::fabs(v + e.errorPlus - num(r["speed"][std::string(key) + "_max"]))});
          ++i;
        }
      }
      qInfo() << key << "spread bars: max |bar end - eval.json min/max|" << maxDiff;
      QVERIFY(maxDiff < 1e-12);
    }
    // Hover a speed point: evaluation, router, fraction, value and spread.
    {
      const CompareView::Curve& c = cv->curves().front();
      QCustomPlot* p = cv->curvePlot();
      const auto pt = c.graph->data()->at(0);
      const QPointF pixel(p->xAxis->coordToPixel(pt->key), p->yAxis->coordToPixel(pt->value));
      const QString text = cv->hoverText(p, pixel);
      qInfo() << "hover:" << text;
      QVERIFY(text.contains(c.evaluation) && text.contains(c.router));
      QVERIFY(text.contains("k/E 0.25"));
      QVERIFY(text.contains(QString::number(pt->value, 'g', 5)));
      QVERIFY(text.contains("spread min-max"));
      QVERIFY(cv->hoverText(p, QPointF(2, 2)).isEmpty());  // outside the axis rect
      // The same text as the tooltip of a real mouse move.
      QMouseEvent move(QEvent::MouseMove, pixel, p->mapToGlobal(pixel), Qt::NoButton, Qt::NoButton, Qt::NoModifier);
      QApplication::sendEvent(p, &move);
      QTRY_COMPARE_WITH_TIMEOUT(QToolTip::text(), text, 2000);
    }

    // FLOP axis: x is ffn_flops_fraction; the oracle (none recorded) is left out and counted.
    cv->metricCombo()->setCurrentIndex(cv->metricCombo()->findData(CompareView::PerplexityRatio));
    cv->xAxisCombo()->setCurrentIndex(1);
    replot(cv);
    QCOMPARE(int(cv->curves().size()), 2);
    QCOMPARE(cv->omittedPoints(), 1);
    QVERIFY2(cv->curveCaption().contains("1 result without a measured FFN FLOP fraction left out"),
             qPrintable(cv->curveCaption()));
    {
      const QString why = checkCurves(CompareView::PerplexityRatio, true);
      QVERIFY2(why.isEmpty(), qPrintable(why));
    }
    QVERIFY(cv->curvePlot()->xAxis->label().contains("FFN FLOPs"));
    cv->xAxisCombo()->setCurrentIndex(0);
    replot(cv);
    QCOMPARE(cv->omittedPoints(), 0);

    // Heatmap: one row per checked result with layer_rel_error, cells as the files say.
    QCOMPARE(cv->heatColumns(), (QStringList{"blk.0", "blk.1", "blk.2"}));
    QCOMPARE(int(cv->heatRows().size()), 5);
    QCOMPARE(cv->heatmap()->data()->keySize(), 3);
    QCOMPARE(cv->heatmap()->data()->valueSize(), 5);
    double maxCell = 0;
    int nulls = 0;
    for (int r = 0; r < 5; ++r) {
      const CompareView::HeatRow& h = cv->heatRows()[size_t(r)];
      const json* match = nullptr;
      for (const json& res : docs.at(h.evaluation.toStdString())["results"])
        if (res["router"] == h.router.toStdString() && num(res["fraction"]) == h.fraction) match = &res;
      QVERIFY(match);
      for (int c = 0; c < 3; ++c) {
        const json& want = (*match)["layer_rel_error"][size_t(c)];
        const double got = cv->heatmap()->data()->cell(c, r);
        if (want.is_null()) {
          QVERIFY(std::isnan(got));
          ++nulls;
        } else {
          maxCell = std::max(maxCell, std::fabs(got - want.get<double>()));
        }
      }
    }
    // Each cell is centred on its (column, row) coordinate, i.e. under its
    // tick label: a range of -0.5 .. n-0.5 shifted every cell by up to half a
    // cell and drew the edge cells at half size (found in a new-user trial).
    for (int r = 0; r < 5; ++r)
      for (int c = 0; c < 3; ++c) {
        double key = -1, value = -1;
        cv->heatmap()->data()->cellToCoord(c, r, &key, &value);
        QCOMPARE(key, double(c));
        QCOMPARE(value, double(r));
      }
    // ... and drawn whole: with a tight boundary the first and last rows came out half as tall.
    QVERIFY(!cv->heatmap()->tightBoundary());
    qInfo() << "heatmap: max |cell - layer_rel_error|" << maxCell << "null cells" << nulls;
    QVERIFY(maxCell < 1e-12);
    QCOMPARE(nulls, 1);
    // blk.0 carries the most error: mean of 0.6, 0.4, 0.5, 0.7, 0.45.
    QVERIFY2(cv->heatmapCaption().contains("most error on average: blk.0 (mean 0.53 over 5 results)"),
             qPrintable(cv->heatmapCaption()));
    {
      QCustomPlot* p = cv->heatmapPlot();
      const QPointF cell(p->xAxis->coordToPixel(0), p->yAxis->coordToPixel(0));
      const QString text = cv->hoverText(p, cell);
      qInfo() << "heatmap hover:" << text;
      const CompareView::HeatRow& h = cv->heatRows().front();
      QVERIFY(text.contains(h.evaluation) && text.contains(h.router) && text.contains("blk.0"));
      QVERIFY(text.contains("layer_rel_error " + QString::number(h.values[0], 'g', 6)));
    }

    // The table: one row per result of the checked evaluations.
    QTableWidget* t = cv->numbersTable();
    QCOMPARE(t->rowCount(), 5);
    QCOMPARE(t->columnCount(), 10);
    bool seen = false;
    for (int r = 0; r < t->rowCount(); ++r)
      if (t->item(r, 0)->text() == "a-mlp" && t->item(r, 1)->text() == "mlp" && t->item(r, 2)->text() == "0.2500") {
        seen = true;
        QCOMPARE(t->item(r, 3)->text(), QString("0.3000"));
        QCOMPARE(t->item(r, 4)->text(), QString("30.00"));
        QCOMPARE(t->item(r, 5)->text(), QString::number(20.0 / 30.0, 'f', 4));
        QCOMPARE(t->item(r, 8)->text(), QString("1.80"));
        QCOMPARE(t->item(r, 9)->text(), QString("1.30"));
        QVERIFY2(t->item(r, 8)->toolTip().endsWith("1.80 [1.60-2.00] (5)"), qPrintable(t->item(r, 8)->toolTip()));
        QVERIFY2(t->item(r, 9)->toolTip().endsWith("1.30 [1.20-1.45] (3)"), qPrintable(t->item(r, 9)->toolTip()));
      }
    QVERIFY(seen);
    QVERIFY(t->isSortingEnabled());

    // CSV: the table's results, then the heatmap's cells.
    const QString csv = cv->csvData();
    const QStringList blocks = csv.split("\n\n");
    QCOMPARE(blocks.size(), 2);
    const QStringList rows = blocks[0].split('\n', Qt::SkipEmptyParts);
    QVERIFY(rows[0].startsWith("evaluation,router,fraction,ffn_flops_fraction,perplexity"));
    QCOMPARE(rows.size(), 1 + 5);
    QVERIFY(rows.contains("a-mlp,mlp,0.25,0.3,30,0.66666667,0.7,0.4,1.8,1.6,2,5,1.3,1.2,1.45,3"));
    QVERIFY(rows.contains("a-mlp,oracle,0.25,,22,0.90909091,0.9,0.1,,,,0,,,,0"));
    const QStringList cells = blocks[1].split('\n', Qt::SkipEmptyParts);
    QCOMPARE(cells[0], QString("evaluation,router,fraction,layer,layer_rel_error"));
    QCOMPARE(cells.size(), 1 + 5 * 3);
    QVERIFY(cells.contains("a-mlp,mlp,0.25,blk.0,0.6"));
    QVERIFY(cells.contains("a-mlp,oracle,0.25,blk.1,"));
    QVERIFY(cells.contains("b-sim,similarity,0.5,blk.2,0.1"));

    // Fits a 1366x768 window: no widget of the view outside it, no horizontal scrolling.
    const int room = 1366 - 16 - 240 - 260 - 24;  // as test_figures' windowFitsASmallScreen
    qInfo() << "Compare minimum width" << cv->minimumSizeHint().width() << "room" << room;
    QVERIFY(cv->minimumSizeHint().width() <= room);
    QVERIFY(w.width() <= 1366 && w.height() <= 768);
    for (QWidget* c : cv->findChildren<QWidget*>()) {
      if (!c->isVisible() || c->isWindow()) continue;
      const QRect r(c->mapTo(&w, QPoint(0, 0)), c->size());
      QVERIFY2(w.rect().contains(r), qPrintable(QString("%1 (%2) at %3,%4 %5x%6 is outside the window")
                                                    .arg(c->objectName(), c->metaObject()->className())
                                                    .arg(r.x())
                                                    .arg(r.y())
                                                    .arg(r.width())
                                                    .arg(r.height())));
    }
    QVERIFY(!t->horizontalScrollBar()->isVisible());
    QVERIFY(!list->horizontalScrollBar()->isVisible());
    QVERIFY(cv->curvePlot()->width() >= 200 && cv->heatmapPlot()->width() >= 200);
    qInfo() << "plots" << cv->curvePlot()->size() << cv->heatmapPlot()->size() << "table" << t->size();

    // Exports: PNG at the figure's size, SVG with the titles.
    QTemporaryDir out;
    QString err;
    QVERIFY2(cv->exportTo(out.filePath("compare.png"), "png", 96, &err), qPrintable(err));
    QVERIFY2(cv->exportTo(out.filePath("compare.svg"), "svg", 96, &err), qPrintable(err));
    const QImage img(out.filePath("compare.png"));
    QCOMPARE(img.size(), cv->figureRoot()->size());
    QFile svg(out.filePath("compare.svg"));
    QVERIFY(svg.open(QIODevice::ReadOnly));
    const QByteArray svgText = svg.readAll();
    QVERIFY(svgText.contains("<svg"));
    QVERIFY(svgText.contains("Evaluations compared") && svgText.contains("Relative FFN error per site"));

    // At 1920x1080 the cells hold their values.
    w.resize(1920, 1080);
    replot(cv);
    replot(cv);
    int printed = 0;
    for (int i = 0; i < cv->heatmapPlot()->itemCount(); ++i)
      if (auto* text = qobject_cast<QCPItemText*>(cv->heatmapPlot()->item(i))) printed += text->text() == "0.60";
    qInfo() << "heatmap axis rect at 1920x1080" << cv->heatmapPlot()->axisRect()->rect()
            << "cells showing 0.60:" << printed;
    QCOMPARE(printed, 1);
  }

  void checksTheNewestByDefault() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(shared_, tmp);
    QVERIFY(!ws.isEmpty());
    const int n = CompareView::kDefaultChecked + 1;
    const QDateTime base = QDateTime::currentDateTime().addSecs(-3600);
    for (int i = 0; i < n; ++i) {
      const QString path = ws + QString("/evaluations/e%1/eval.json").arg(i);
      writeJson(
          path,
          evalDoc(ws + "/corpus", "heldout", 20.0,
                  json::array({result("mlp", 0.5, 24.0, 0.8, 0.2, 0.55, {0.1}, speed(1.4, 1.3, 1.5, 1.1, 1.0, 1.2))})));
      QFile f(path);
      QVERIFY(f.open(QIODevice::ReadWrite));
      // e0 oldest; e3 newest, so that name order and age differ.
      QVERIFY(f.setFileTime(base.addSecs(i == 3 ? 3000 : i * 60), QFileDevice::FileModificationTime));
    }
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* cv = test::studioView<CompareView>(w);
    w.tabs()->setCurrentWidget(cv);
    replot(cv);
    QListWidget* list = cv->evaluationList();
    QCOMPARE(list->count(), n);
    QCOMPARE(itemOf(list, "e0")->checkState(), Qt::Unchecked);
    for (int i = 1; i < n; ++i) QCOMPARE(itemOf(list, QString("e%1").arg(i))->checkState(), Qt::Checked);
    QCOMPARE(int(cv->curves().size()), CompareView::kDefaultChecked);
    bool noted = false;
    for (QLabel* l : cv->findChildren<QLabel*>())
      noted |= l->isVisible() && l->text() == QString("The newest %1 of %2 are checked.").arg(n - 1).arg(n);
    QVERIFY(noted);
  }

  void emptyStateAndDamagedEvaluation() {
    QTemporaryDir tmp;
    const QString ws = test::privateStudioWorkspace(shared_, tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* cv = test::studioView<CompareView>(w);
    w.tabs()->setCurrentWidget(cv);
    settle();
    QVERIFY(!cv->hasData());
    bool told = false;
    for (QLabel* l : cv->findChildren<QLabel*>())
      told |= l->isVisible() && l->text().contains("Pipeline > Evaluate") && l->text().contains("moefy eval");
    QVERIFY(told);
    QString err;
    QVERIFY(!cv->exportTo(tmp.filePath("x.png"), "png", 96, &err));

    // A damaged eval.json beside a good one: listed with the reader's error, left out of the plot.
    const std::map<std::string, json> docs = writeEvaluations(ws);
    json bad = docs.at("b-sim");
    bad["results"][0]["perplexity"] = 0.5;
    writeJson(ws + "/evaluations/b-sim/eval.json", bad);
    QDir(ws + "/evaluations/c-other").removeRecursively();
    w.context()->rescan();
    replot(cv);
    QVERIFY(cv->hasData());
    QListWidgetItem* damaged = itemOf(cv->evaluationList(), "b-sim");
    QVERIFY(damaged);
    qInfo() << "damaged:" << damaged->text() << damaged->toolTip();
    QVERIFY(damaged->text().contains("unreadable"));
    QVERIFY(damaged->toolTip().contains("eval.json") && damaged->toolTip().contains("perplexity"));
    QVERIFY(!(damaged->flags() & Qt::ItemIsUserCheckable));
    bool named = false;
    for (int i = 0; i < w.issues()->count(); ++i)
      named |= w.issues()->item(i)->text().contains("b-sim") && w.issues()->item(i)->text().contains("perplexity");
    QVERIFY(named);
    for (const CompareView::Curve& c : cv->curves()) QCOMPARE(c.evaluation, QString("a-mlp"));
    QCOMPARE(int(cv->curves().size()), 2);
    QVERIFY(!cv->dataWarningShown());
  }
};

QTEST_MAIN(TestCompare)
#include "test_compare.moc"
