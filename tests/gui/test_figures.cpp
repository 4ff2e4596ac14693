// GUI tests of the figures a researcher exports and the window they work in
// (issue 20): PNG export at print resolutions keeps the on-screen layout, the
// recall plot's axis and colours, speed figures with spread, the layout on a
// 1366x768 screen, and progress that reaches its end. Issue 17: the Front
// view (quality against FFN FLOPs per method) from a hand-written front.json.
// Issue 16: the Experts view on `moefy analyze` of a random Mixtral checkpoint
// (values, usage order, linked selection, exports of one and of all layers
// with a per-layer or global colour scale, a damaged analysis).
#include "views/qcp.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QComboBox>
#include <QDockWidget>
#include <QListWidget>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTextBlock>
#include <QTextBrowser>
#include <QTextLayout>
#include <QTreeWidget>
#include <QTreeWidgetItemIterator>
#include <QtTest>
#include <climits>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "analysis/analyze/moe_analysis.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"
#include "front_fixture.h"
#include "gui_fixture.h"
#include "testutil.h"
#include "views/figure.h"
#include "views/jobrunner.h"
#include "views/mainwindow.h"
#include "views/pipeline.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;

namespace {

template <typename T>
T* viewOf(MainWindow& w) {
  for (QWidget* v : w.views())
    if (auto* t = qobject_cast<T*>(v)) return t;
  return nullptr;
}

/// Darkness (255 - grey) of each pixel, as doubles, row-major.
std::vector<double> ink(const QImage& img) {
  QImage g = img.convertToFormat(QImage::Format_Grayscale8);
  std::vector<double> v(size_t(g.width()) * g.height());
  for (int y = 0; y < g.height(); ++y) {
    const uchar* row = g.constScanLine(y);
    for (int x = 0; x < g.width(); ++x) v[size_t(y) * g.width() + x] = 255.0 - row[x];
  }
  return v;
}

/// Pearson correlation of the darkness of two images of the same size.
double inkCorrelation(const QImage& a, const QImage& b) {
  std::vector<double> x = ink(a), y = ink(b);
  if (x.size() != y.size() || x.empty()) return -2;
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= double(x.size()), my /= double(y.size());
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : -2;
}

/// Bounding box of the pixels darker than `threshold` inside `area`.
QRect inkBox(const QImage& img, const QRect& area, int threshold = 128) {
  QImage g = img.convertToFormat(QImage::Format_Grayscale8);
  int x0 = INT_MAX, y0 = INT_MAX, x1 = -1, y1 = -1;
  const QRect r = area.intersected(g.rect());
  for (int y = r.top(); y <= r.bottom(); ++y) {
    const uchar* row = g.constScanLine(y);
    for (int x = r.left(); x <= r.right(); ++x)
      if (row[x] < threshold) x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
  }
  return x1 < 0 ? QRect() : QRect(QPoint(x0, y0), QPoint(x1, y1));
}

QRect scaled(const QRect& r, double s) {
  return QRect(int(std::floor(r.left() * s)), int(std::floor(r.top() * s)), int(std::ceil(r.width() * s)),
               int(std::ceil(r.height() * s)));
}

/// Why the text of `plot` (a part of the figure `root`, exported as `lo` at
/// 96 dpi and `hi` at 300 dpi) is cut or misplaced, "" when it is not: the
/// title (row 0) and data caption (row 1) have their ink inside their element,
/// clear of its left and right edges (a text wider than the plot is cut
/// there); the axis labels fit beside their axis; nothing is drawn on the
/// plot's outer edge; the x label is drawn below the axis rect.
QString clippedText(const QImage& lo, const QImage& hi, QWidget* root, QCustomPlot* plot) {
  const double s300 = 300.0 / 96.0;
  const QPoint off = plot->mapTo(root, QPoint(0, 0));
  const QString name = plot->objectName() + ": ";
  for (int r : {0, 1}) {
    auto* el = qobject_cast<QCPTextElement*>(plot->plotLayout()->element(r, 0));
    if (!el || el->text().isEmpty()) return name + QString("no text in layout row %1").arg(r);
    const QRect area = el->outerRect().translated(off);
    const QRect boxLo = inkBox(lo, area), boxHi = inkBox(hi, scaled(area, s300));
    const QRect areaHi = scaled(area, s300);
    qInfo() << name << el->text().left(40) << "element" << area << "ink" << boxLo << "at 300 dpi" << boxHi;
    if (!boxLo.isValid() || !boxHi.isValid()) return name + "no ink for '" + el->text() + "'";
    if (!(boxLo.left() > area.left() + 1 && boxLo.right() < area.right() - 1) ||
        !(boxHi.left() > areaHi.left() + 2 && boxHi.right() < areaHi.right() - 2))
      return name + "cut: '" + el->text() + "'";
  }
  const QRect axis = plot->axisRect()->rect();
  if (QFontMetrics(plot->xAxis->labelFont()).horizontalAdvance(plot->xAxis->label()) >= axis.width())
    return name + "x label wider than its axis";
  if (QFontMetrics(plot->yAxis->labelFont()).horizontalAdvance(plot->yAxis->label()) >= axis.height())
    return name + "y label longer than its axis";
  const QRect edge(off, plot->size());
  for (const QRect& line :
       {QRect(edge.left(), edge.top(), edge.width(), 1), QRect(edge.left(), edge.bottom(), edge.width(), 1),
        QRect(edge.left(), edge.top(), 1, edge.height()), QRect(edge.right(), edge.top(), 1, edge.height())})
    if (inkBox(lo, line).isValid())
      return name + QString("ink on the plot's edge %1,%2 %3x%4")
                        .arg(line.x())
                        .arg(line.y())
                        .arg(line.width())
                        .arg(line.height());
  const QRect below(off.x() + axis.left(), off.y() + axis.bottom() + 1, axis.width(),
                    plot->height() - axis.bottom() - 2);
  if (!inkBox(lo, below).isValid()) return name + "no x label below the axis";
  return {};
}

bool copyTree(const QString& from, const QString& to) {
  QDir src(from);
  if (!QDir().mkpath(to)) return false;
  for (const QFileInfo& fi : src.entryInfoList(QDir::Files | QDir::Dirs | QDir::NoDotAndDotDot)) {
    const QString dst = to + "/" + fi.fileName();
    if (fi.isDir() ? !copyTree(fi.filePath(), dst) : !QFile::copy(fi.filePath(), dst)) return false;
  }
  return true;
}

void settle(MainWindow& w) {
  for (int i = 0; i < 3; ++i) QApplication::processEvents();
  (void)w;
}

// A view showing a damaged artefact: the reader's message naming `key` is
// visible in a label starting with `banner`, the issues list names `file`,
// and export refuses with "nothing to export" (writing into `dir`).
template <class View>
void checkDamagedShown(MainWindow& w, View* v, const QString& banner, const QString& file, const QString& key,
                       const QDir& dir) {
  bool shown = false;
  for (QLabel* l : v->template findChildren<QLabel*>())
    shown |= l->isVisible() && l->text().contains(banner) && l->text().contains(key);
  QVERIFY(shown);
  bool named = false;
  for (int i = 0; i < w.issues()->count(); ++i) named |= w.issues()->item(i)->text().contains(file);
  QVERIFY(named);
  QString err;
  QVERIFY(!v->exportTo(dir.filePath("x.png"), "png", 96, &err));
  QVERIFY2(err.contains("nothing to export"), qPrintable(err));
}

}  // namespace

class TestFigures : public QObject {
  Q_OBJECT
  QString ws_;
  QString analysisWs_;

  /// A workspace whose analyses/ holds `moefy analyze` of a random Mixtral
  /// checkpoint (scripts/ref/make_checkpoint.py mixtral: 2 MoE layers, 4
  /// experts of 48 neurons, top-2) on three short token sequences:
  /// "a-mixtral" (with the corpus), "b-static" (--static-only) and
  /// "c-damaged" (a copy whose analysis.json gives blk.0.router_sim another
  /// shape). Built once per run; empty on failure (printed).
  QString analysisWorkspace() {
    if (!analysisWs_.isEmpty()) return analysisWs_;
    const std::filesystem::path root = test::freshDir("gui_experts");
    const QString r = QString::fromStdString(root.string());
    const QString script =
        QString::fromStdString((test::sourceDir() / "scripts" / "ref" / "make_checkpoint.py").string());
    const test::RunResult py = test::runPython({script, "mixtral", r + "/model"});
    if (py.exitCode != 0) {
      qWarning() << "make_checkpoint:" << py.err.c_str();
      return {};
    }
    std::ofstream(root / "seqs.ids") << "5 17 3 99 42 7 1 64 23 11\n8 9 10 11 100 1\n33 2 71 45 12 90 6 18\n";
    moefy::views::Workspace ws = moefy::views::Workspace::create(r + "/ws", "experts", r + "/model", r + "/seqs.ids");
    ws.save();
    const QString an = r + "/ws/analyses/";
    for (const QStringList& args :
         {QStringList{"analyze", r + "/model", r + "/seqs.ids", "--out", an + "a-mixtral", "--quiet"},
          QStringList{"analyze", r + "/model", "--static-only", "--out", an + "b-static", "--quiet"}}) {
      const test::RunResult cli = test::runCli(args);
      if (cli.exitCode != 0) {
        qWarning() << "moefy" << args << cli.err.c_str();
        return {};
      }
    }
    if (!copyTree(an + "a-mixtral", an + "c-damaged")) {
      qWarning() << "cannot copy the analysis";
      return {};
    }
    const std::filesystem::path meta = (an + "c-damaged/analysis.json").toStdString();
    std::ifstream in(meta);
    nlohmann::json doc = nlohmann::json::parse(in);
    in.close();
    doc["tensors"]["blk.0.router_sim"] = {5, 5};
    std::ofstream(meta) << doc.dump(1);
    analysisWs_ = ws.dir;
    return analysisWs_;
  }

  /// A workspace in tmp/ws using the shared model and corpus, with copies of
  /// the shared artefacts named in `copy` ("partitions/coact-E16-s0", ...).
  QString privateWorkspace(QTemporaryDir& tmp, const QStringList& copy = {}) {
    const QString ws = tmp.filePath("ws");
    if (!QDir().mkpath(ws) || !QFile::copy(ws_ + "/workspace.json", ws + "/workspace.json")) return {};
    Workspace w0 = Workspace::load(ws);
    w0.modelPath = ws_ + "/model";
    w0.corpusPath = ws_ + "/corpus";
    w0.save();
    for (const QString& c : copy)
      if (!copyTree(ws_ + "/" + c, ws + "/" + c)) return {};
    return ws;
  }

 private Q_SLOTS:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QString err;
    ws_ = test::fakeWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  // Defect 1: a PNG at 300 dpi is the on-screen figure magnified by 300/96.
  // It used to be drawn with fonts converted at 300 dpi on top of the scale:
  // text about 3x too large, titles and labels cut off.
  void pngAtPrintDpiKeepsTheScreenLayout() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QTemporaryDir out;
    if (qEnvironmentVariableIsSet("MOEFY_KEEP_FIGURES")) {  // look at the PNGs by hand
      out.setAutoRemove(false);
      qInfo() << "figures kept in" << out.path();
    }
    const QStringList tabs{"Co-activation", "Sparsity", "Router",  "Evaluation",
                           "Partitions",    "Neuron",   "Compare", "Front"};
    int seen = 0;
    for (int i = 0; i < w.tabs()->count(); ++i) {
      if (!tabs.contains(w.tabs()->tabText(i))) continue;
      w.tabs()->setCurrentIndex(i);
      settle(w);
      FigureView* f = w.figureView(i);
      QVERIFY(f && f->hasData());
      ++seen;
      for (QCustomPlot* p : f->figureRoot()->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
      const QString stem = out.filePath(f->figureBaseName());
      QString err;
      QVERIFY2(f->exportTo(stem + "-96.png", "png", 96, &err), qPrintable(err));
      QVERIFY2(f->exportTo(stem + "-300.png", "png", 300, &err), qPrintable(err));
      QImage lo(stem + "-96.png"), hi(stem + "-300.png");
      QCOMPARE(lo.size(), f->figureRoot()->size());
      QVERIFY(std::abs(hi.width() - f->figureRoot()->width() * 300.0 / 96.0) <= 1.0);
      QCOMPARE(hi.dotsPerMeterX(), int(std::lround(300 / 0.0254)));
      const double corr = inkCorrelation(lo, hi.scaled(lo.size(), Qt::IgnoreAspectRatio, Qt::SmoothTransformation));
      qInfo() << w.tabs()->tabText(i) << "96 vs 300 dpi (downscaled) ink correlation" << corr;
      // Measured: 0.86-0.98 per view (hairlines and dotted grids rasterise a
      // little differently at 300 dpi); the defect (fonts ~3x too large, labels
      // cut) gave far less.
      QVERIFY2(corr > 0.8,
               qPrintable(w.tabs()->tabText(i) +
                          QString(": the 300 dpi PNG is not the screen layout (correlation %1)").arg(corr)));
    }
    QCOMPARE(seen, tabs.size());  // every listed view exists and was exported
  }

  // Defect 1, measured on a known label: the title's ink box at 300 dpi is the
  // 96 dpi one scaled by 300/96 and lies inside the title's element.
  void pngTextExtentsScaleWithDpi() {
    QWidget root;
    root.resize(640, 420);
    auto* plot = new QCustomPlot(&root);
    plot->setGeometry(0, 0, 640, 420);
    plot->plotLayout()->insertRow(0);
    auto* title = new QCPTextElement(plot, "Known title WgW 0123", QFont("DejaVu Sans", 11, QFont::Bold));
    plot->plotLayout()->addElement(0, 0, title);
    plot->xAxis->setLabel("x label");
    plot->yAxis->setLabel("y label");
    root.show();
    plot->replot(QCustomPlot::rpImmediateRefresh);
    QApplication::processEvents();
    QTemporaryDir out;
    QString err;
    QVERIFY2(exportFigure(&root, out.filePath("t96.png"), "png", 96, &err), qPrintable(err));
    QVERIFY2(exportFigure(&root, out.filePath("t300.png"), "png", 300, &err), qPrintable(err));
    QImage lo(out.filePath("t96.png")), hi(out.filePath("t300.png"));
    const QRect area = title->outerRect();
    const QRect boxLo = inkBox(lo, area);
    const QRect boxHi = inkBox(hi, scaled(area, 300.0 / 96.0));
    qInfo() << "title element" << area << "ink at 96 dpi" << boxLo << "at 300 dpi" << boxHi;
    QVERIFY(boxLo.isValid() && boxHi.isValid());
    const double ratio = double(boxHi.width()) / boxLo.width(), ratioH = double(boxHi.height()) / boxLo.height();
    qInfo() << "title width ratio" << ratio << "height ratio" << ratioH << "expected" << 300.0 / 96.0;
    QVERIFY(std::abs(ratio - 300.0 / 96.0) < 0.25);
    QVERIFY(std::abs(ratioH - 300.0 / 96.0) < 0.5);
    // Not cut off: the ink stays clear of the element's left and right edges.
    const QRect areaHi = scaled(area, 300.0 / 96.0);
    QVERIFY(boxHi.left() > areaHi.left() + 2 && boxHi.right() < areaHi.right() - 2);
  }

  // Defect 1, vector formats: the PDF and SVG of each plot view hold every
  // axis label as text, unclipped (the SVG's text elements stay in the page).
  void vectorExportsKeepTheirText() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QTemporaryDir out;
    auto* ev = viewOf<EvalView>(w);
    w.tabs()->setCurrentWidget(ev);
    settle(w);
    QString err;
    QVERIFY2(ev->exportTo(out.filePath("e.svg"), "svg", 96, &err), qPrintable(err));
    QFile f(out.filePath("e.svg"));
    QVERIFY(f.open(QIODevice::ReadOnly));
    const QString svg = QString::fromUtf8(f.readAll());
    for (const char* label : {"Quality vs active experts", "Speed vs active experts", "active fraction of FFN experts"})
      QVERIFY2(svg.contains(label), label);
    QVERIFY2(ev->exportTo(out.filePath("e.pdf"), "pdf", 96, &err), qPrintable(err));
    QVERIFY(QFileInfo(out.filePath("e.pdf")).size() > 1000);
    // The issue-20 views: the Compare dashboard and the Neuron page.
    const std::vector<std::pair<QString, QStringList>> views{
        {"Compare", {"Evaluations compared", "Relative FFN error per site", "FFN site"}},
        {"Neuron", {"Firing frequency by category", "Activation on the recorded samples"}}};
    for (const auto& [tab, labels] : views) {
      int i = 0;
      while (i < w.tabs()->count() && w.tabs()->tabText(i) != tab) ++i;
      QVERIFY2(i < w.tabs()->count(), qPrintable(tab));
      w.tabs()->setCurrentIndex(i);
      settle(w);
      FigureView* fv = w.figureView(i);
      QVERIFY(fv && fv->hasData());
      const QString stem = out.filePath(tab);
      QVERIFY2(fv->exportTo(stem + ".svg", "svg", 96, &err), qPrintable(err));
      QVERIFY2(fv->exportTo(stem + ".pdf", "pdf", 96, &err), qPrintable(err));
      QFile g(stem + ".svg");
      QVERIFY(g.open(QIODevice::ReadOnly));
      const QString text = QString::fromUtf8(g.readAll());
      for (const QString& label : labels) QVERIFY2(text.contains(label), qPrintable(tab + ": " + label));
      QVERIFY(QFileInfo(stem + ".pdf").size() > 1000);
    }
  }

  // Defect 5: recall@k is drawn against the active fraction k/E by default
  // (comparable across expert counts); absolute k is an option.
  void recallPlotUsesActiveFraction() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* pv = viewOf<PartitionView>(w);
    w.tabs()->setCurrentWidget(pv);
    settle(w);
    auto* plot = pv->figureRoot()->findChild<QCustomPlot*>();
    if (!plot) plot = qobject_cast<QCustomPlot*>(pv->figureRoot());
    QVERIFY(plot);
    QVERIFY(plot->graphCount() >= 2);
    for (int g = 0; g < plot->graphCount(); ++g) {
      const auto* data = plot->graph(g)->data().data();
      QVERIFY(!data->isEmpty());
      const int E = plot->graph(g)->property("experts").toInt();
      QCOMPARE((data->constEnd() - 1)->key, 1.0);  // k = E
      QCOMPARE(data->constBegin()->key, 1.0 / E);
    }
    QVERIFY(plot->xAxis->label().contains("k / E"));
    auto* axis = pv->findChild<QComboBox*>("recallAxis");
    QVERIFY(axis);
    axis->setCurrentIndex(1);
    settle(w);
    const int E = plot->graph(0)->property("experts").toInt();
    QCOMPARE((plot->graph(0)->data()->end() - 1)->key, double(E));
    QVERIFY(pv->csvData().contains("partition,k,fraction,recall"));
  }

  // Defect 5: a partition keeps its series colour when another one appears
  // (here one that sorts first, which shifted every colour before).
  void recallColoursStayWithTheirArtefact() {
    QTemporaryDir tmp;
    const QString ws =
        privateWorkspace(tmp, {"partitions/coact-E16-s0", "partitions/random-E16-s0", "recordings/rec-brown"});
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* pv = viewOf<PartitionView>(w);
    w.tabs()->setCurrentWidget(pv);
    settle(w);
    auto* plot = pv->figureRoot()->findChild<QCustomPlot*>();
    if (!plot) plot = qobject_cast<QCustomPlot*>(pv->figureRoot());
    auto colours = [&] {
      std::map<QString, QColor> c;
      for (int g = 0; g < plot->graphCount(); ++g)
        c[plot->graph(g)->property("artefact").toString()] = plot->graph(g)->pen().color();
      return c;
    };
    const auto before = colours();
    QCOMPARE(int(before.size()), 2);
    QVERIFY(copyTree(ws_ + "/partitions/kmeans-E16-s0", ws + "/partitions/aaa-kmeans-E16-s0"));
    w.context()->rescan();
    settle(w);
    const auto after = colours();
    QCOMPARE(int(after.size()), 3);
    QColor added;
    for (const auto& [dir, col] : after) {
      if (!before.count(dir)) {
        added = col;
        continue;
      }
      QCOMPARE(col, before.at(dir));
    }
    QVERIFY(added.isValid());
    for (const auto& [dir, col] : before) QVERIFY(col != added);
  }

  // Partition comparison: the Partitions view draws the pairwise agreement
  // of every partition of the picked site as a heatmap (names on both axes,
  // the value in each cell), whose cells are the core's adjustedRandIndex /
  // normalizedMutualInfo of the labels the core reader returns; the table
  // gains "stability (ARI)" when a partition has it; the CSV holds the
  // matrix; the view fits a 1366x768 window.
  void partitionAgreementMatrix() {
    {
      // Partitions without stability metrics (the shared workspace's): no stability column.
      MainWindow w;
      w.resize(1366, 768);
      w.show();
      QVERIFY(w.openWorkspace(ws_));
      auto* pv = viewOf<PartitionView>(w);
      w.tabs()->setCurrentWidget(pv);
      settle(w);
      QVERIFY(!pv->csvData().section('\n', 0, 0).contains("stability"));
    }
    QTemporaryDir tmp;
    const QStringList names{"coact-E16-s0", "kmeans-E16-s0", "kmeans-E16-s1", "random-E16-s0"};
    QStringList copy{"recordings/rec-brown"};
    for (const QString& n : names) copy << "partitions/" + n;
    const QString ws = privateWorkspace(tmp, copy);
    QVERIFY(!ws.isEmpty());
    // One partition with stability metrics (split without --no-stability writes them per site).
    const std::filesystem::path meta = (ws + "/partitions/kmeans-E16-s0/partition.json").toStdString();
    std::ifstream in(meta);
    nlohmann::json doc = nlohmann::json::parse(in);
    in.close();
    for (int L = 0; L < 4; ++L) doc["metrics"][std::to_string(L)]["stability_ari"] = 0.25 + 0.1 * L;
    std::ofstream(meta) << doc.dump(1);

    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* pv = viewOf<PartitionView>(w);
    QVERIFY(pv);
    w.tabs()->setCurrentWidget(pv);
    settle(w);
    QVERIFY(pv->hasData());
    QCustomPlot* plot = pv->agreementPlot();
    QVERIFY(plot);
    QCPColorMap* map = nullptr;
    for (int i = 0; i < plot->plottableCount(); ++i)
      if (auto* m = qobject_cast<QCPColorMap*>(plot->plottable(i))) map = m;
    QVERIFY(map);
    auto* measure = pv->findChild<QComboBox*>("agreementMeasure");
    QVERIFY(measure);
    QCOMPARE(measure->currentText(), QString("ARI"));
    const int n = int(names.size());
    for (int L : {2, 0}) {
      const int at = pv->layerCombo()->findData(L);
      QVERIFY(at >= 0);
      pv->layerCombo()->setCurrentIndex(at);
      settle(w);
      // Whole cells: the data range is the cell centres 0 .. n-1, so without a tight boundary the map spans
      // -0.5 .. n-0.5 like the axes (a tight boundary clipped the first and last cells to half cells, their
      // printed values on the cells' edges; seen in the 1366x768 screenshot).
      QVERIFY(!map->tightBoundary());
      QCOMPARE(map->data()->keyRange().lower, 0.0);
      QCOMPARE(map->data()->keyRange().upper, double(n) - 1);
      QCOMPARE(pv->layer(), L);
      QCOMPARE(pv->agreementPartitions(), names);  // every partition of the site, in the workspace's order
      QVERIFY(map->visible());
      QCOMPARE(map->data()->keySize(), n);
      QCOMPARE(map->data()->valueSize(), n);
      // The reference: the labels through the core reader, the core's ARI and NMI.
      std::vector<std::vector<int32_t>> labels;
      for (const QString& name : names)
        labels.push_back(moefy::Partition::open((ws + "/partitions/" + name).toStdString()).labels(L));
      for (int m = 0; m < 2; ++m) {
        measure->setCurrentIndex(m);
        settle(w);
        const bool nmi = m == 1;
        double maxDiag = 0, maxOff = 0;
        std::map<std::pair<int, int>, QString> printed;  // (column, row) -> text in the cell
        for (int i = 0; i < plot->itemCount(); ++i)
          if (auto* t = qobject_cast<QCPItemText*>(plot->item(i)))
            printed[{int(std::lround(t->position->coords().x())), int(std::lround(t->position->coords().y()))}] =
                t->text();
        QCOMPARE(int(printed.size()), n * n);
        for (int r = 0; r < n; ++r)
          for (int c = 0; c < n; ++c) {
            const double drawn = map->data()->cell(c, r);
            const double core = nmi ? normalizedMutualInfo(labels[size_t(r)], labels[size_t(c)])
                                    : adjustedRandIndex(labels[size_t(r)], labels[size_t(c)]);
            if (r == c)
              maxDiag = std::max(maxDiag, std::abs(drawn - 1.0));
            else
              maxOff = std::max(maxOff, std::abs(drawn - core));
            // Printed with 2 decimals, a value that rounds to zero as "0.00" (never "-0.00").
            QCOMPARE(printed[std::make_pair(c, r)], QString::number(std::abs(drawn) < 0.005 ? 0.0 : drawn, 'f', 2));
          }
        qInfo() << "layer" << L << (nmi ? "NMI" : "ARI") << n << "x" << n << "max |diagonal - 1|" << maxDiag
                << "max |cell - core|" << maxOff << "coact vs kmeans-s0" << map->data()->cell(1, 0) << "coact vs random"
                << map->data()->cell(3, 0);
        QVERIFY(maxDiag < 1e-12);
        QVERIFY(maxOff < 1e-12);
        // Not all ones: the planted partition agrees with its half-scrambled copy more than with a random one.
        QVERIFY(map->data()->cell(1, 0) > map->data()->cell(3, 0));
        QVERIFY(map->data()->cell(3, 0) < 0.5);
        QCOMPARE(map->colorScale()->axis()->label(), QString(nmi ? "NMI" : "ARI"));
        // The names on both axes (long ones elided in the middle).
        for (QCPAxis* axis : {plot->xAxis, plot->yAxis}) {
          auto ticker = qSharedPointerDynamicCast<QCPAxisTickerText>(axis->ticker());
          QVERIFY(ticker);
          QCOMPARE(ticker->ticks().size(), n);
          for (int i = 0; i < n; ++i) {
            const QString label = ticker->ticks().value(double(i));
            QVERIFY2(label == names[i] || (label.contains(QChar(0x2026)) && label.startsWith(names[i].left(3))),
                     qPrintable(label));
          }
        }
      }
      measure->setCurrentIndex(0);
      settle(w);
      // The CSV holds the whole matrix at the site: n x n rows of both measures.
      const QString csv = pv->csvData();
      const QString head = "\nsite,partition_a,partition_b,ari,nmi\n";
      QVERIFY2(csv.contains(head), qPrintable(csv));
      const QStringList rows = csv.section(head, 1).split('\n', Qt::SkipEmptyParts);
      QCOMPARE(int(rows.size()), n * n);
      double maxCsv = 0;
      for (const QString& row : rows) {
        const QStringList f = row.split(',');
        QCOMPARE(int(f.size()), 5);
        QCOMPARE(f[0], QString("blk.%1").arg(L));
        const int a = int(names.indexOf(f[1])), b = int(names.indexOf(f[2]));
        QVERIFY(a >= 0 && b >= 0);
        const double ari = a == b ? 1.0 : adjustedRandIndex(labels[size_t(a)], labels[size_t(b)]);
        const double nmiv = a == b ? 1.0 : normalizedMutualInfo(labels[size_t(a)], labels[size_t(b)]);
        maxCsv = std::max({maxCsv, std::abs(f[3].toDouble() - ari), std::abs(f[4].toDouble() - nmiv)});
      }
      qInfo() << "layer" << L << "CSV agreement rows" << rows.size() << "max |value - core|" << maxCsv;
      QVERIFY(maxCsv < 1e-8);  // written with 10 significant digits
    }

    // The table: "stability (ARI)" for the partition that has it, "-" for the others.
    auto* table = pv->findChild<QTableWidget*>();
    QVERIFY(table);
    int col = -1;
    for (int c = 0; c < table->columnCount(); ++c)
      if (table->horizontalHeaderItem(c)->data(Qt::UserRole).toString() == "stability (ARI)")
        col = c;  // shown "stab. ARI"
    QVERIFY2(col >= 0, "no stability (ARI) column");
    QCOMPARE(pv->layer(), 0);
    for (int r = 0; r < table->rowCount(); ++r) {
      const QString name = table->item(r, 0)->text();
      const QTableWidgetItem* it = table->item(r, col);
      QVERIFY(it);
      if (name == "kmeans-E16-s0") {
        QCOMPARE(it->data(Qt::UserRole).toDouble(), 0.25);  // layer 0
        QCOMPARE(it->text(), QString("0.250"));
      } else {
        QCOMPARE(it->text(), QString("-"));
      }
    }
    QVERIFY(pv->csvData().section('\n', 0, 0).endsWith(",stability (ARI)"));

    // The layout fits 1366x768: no widget of the view reaches past the window,
    // and each heatmap cell holds its printed value.
    qInfo() << "window" << w.size() << "view minimum" << pv->minimumSizeHint() << "agreement plot" << plot->size()
            << "axis rect" << plot->axisRect()->rect();
    QVERIFY2(pv->minimumSizeHint().width() <= 1366 - 16 - 240 - 260 - 24,
             qPrintable(QString("minimum width %1").arg(pv->minimumSizeHint().width())));
    QVERIFY(w.width() <= 1366);
    for (QWidget* c : pv->findChildren<QWidget*>()) {
      if (!c->isVisible()) continue;
      const QRect r(c->mapTo(&w, QPoint(0, 0)), c->size());
      QVERIFY2(c->width() <= w.width() && r.left() >= 0 && r.right() < w.width(),
               qPrintable(QString("%1 (%2) at %3,%4 %5x%6 in a %7 px window")
                              .arg(c->objectName(), c->metaObject()->className())
                              .arg(r.x())
                              .arg(r.y())
                              .arg(r.width())
                              .arg(r.height())
                              .arg(w.width())));
    }
    plot->replot(QCustomPlot::rpImmediateRefresh);
    const double cellW = std::abs(plot->xAxis->coordToPixel(1) - plot->xAxis->coordToPixel(0));
    const double cellH = std::abs(plot->yAxis->coordToPixel(1) - plot->yAxis->coordToPixel(0));
    QFont valueFont;
    for (int i = 0; i < plot->itemCount(); ++i)
      if (auto* t = qobject_cast<QCPItemText*>(plot->item(i))) valueFont = t->font();
    const QFontMetrics fm(valueFont);
    qInfo() << "agreement cell" << cellW << "x" << cellH << "px; value text" << fm.horizontalAdvance("-0.00") << "x"
            << fm.height();
    QVERIFY(cellW >= fm.horizontalAdvance("-0.00") && cellH >= fm.height());
    QVERIFY(plot->axisRect()->rect().right() < plot->width() && plot->axisRect()->rect().left() > 0);

    // One partition left: nothing to compare, no map, no matrix in the CSV.
    for (int i = 1; i < n; ++i) QVERIFY(QDir(ws + "/partitions/" + names[i]).removeRecursively());
    w.context()->rescan();
    settle(w);
    QCOMPARE(pv->agreement().n, 0);
    QVERIFY(pv->agreementPartitions().isEmpty());
    QVERIFY(!map->visible());
    QVERIFY(pv->csvData().endsWith("site,partition_a,partition_b,ari,nmi\n"));
  }

  // Defect 6 (figures): speed points carry their spread and run count; an
  // oracle router (it needs the dense hidden) has no speed curve.
  void speedFigureShowsSpreadAndSkipsOracle() {
    QTemporaryDir tmp;
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    const QString edir = ws + "/evaluations/eval-spread";
    QVERIFY(QDir().mkpath(edir));
    nlohmann::json results = nlohmann::json::array();
    for (const char* router : {"oracle", "similarity"})
      for (double f : {0.25, 0.5, 1.0}) {
        nlohmann::json r = {{"router", router},
                            {"fraction", f},
                            {"top_k", {4, 4}},
                            {"loss", 3.0 + (1 - f)},
                            {"perplexity", std::exp(3.0 + (1 - f))},
                            {"loss_delta", 1 - f},
                            {"top1_agreement", f},
                            {"kl", 1 - f},
                            {"positions", 1000}};
        if (std::string(router) == "oracle") {
          r["speed_note"] = "oracle router: it needs the dense FFN's hidden, so it has no speed";
        } else {
          r["speed"] = {{"forward_tokens_per_s", 1000 / f}, {"dense_forward_tokens_per_s", 1000.0},
                        {"forward_speedup", 1 / f},         {"forward_speedup_min", 0.9 / f},
                        {"forward_speedup_max", 1.2 / f},   {"forward_runs", 5},
                        {"dense_forward_runs", 5}};
        }
        results.push_back(r);
      }
    nlohmann::json doc = {{"format", "moefy-eval"},
                          {"version", 1},
                          {"reference", {{"loss", 3.0}, {"perplexity", std::exp(3.0)}}},
                          {"results", results}};
    QFile f(edir + "/eval.json");
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(QByteArray::fromStdString(doc.dump(2)));
    f.close();
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* ev = viewOf<EvalView>(w);
    w.tabs()->setCurrentWidget(ev);
    settle(w);
    QVERIFY(ev->hasData());
    auto plots = ev->findChildren<QCustomPlot*>();
    QCustomPlot* speed = nullptr;
    for (QCustomPlot* p : plots)
      if (p->yAxis->label().contains("speed-up")) speed = p;
    QVERIFY(speed);
    QCOMPARE(speed->graphCount(), 1);
    QCOMPARE(speed->graph(0)->name(), QString("similarity"));
    QCPErrorBars* bars = nullptr;
    for (int i = 0; i < speed->plottableCount(); ++i)
      if (auto* b = qobject_cast<QCPErrorBars*>(speed->plottable(i))) bars = b;
    QVERIFY2(bars, "no spread bars on the speed plot");
    QCOMPARE(bars->dataCount(), 3);
    // At fraction 0.25: median 4, min 3.6, max 4.8.
    QVERIFY(std::abs(bars->data()->at(0).errorMinus - 0.4) < 1e-9);
    QVERIFY(std::abs(bars->data()->at(0).errorPlus - 0.8) < 1e-9);
    QVERIFY2(speed->yAxis->label().contains("median of 5 runs"), qPrintable(speed->yAxis->label()));
    QVERIFY(ev->csvData().contains("forward_speedup_min"));
  }

  // Graph layout (Graphviz sfdp in the core, seeded): the same positions on
  // every redraw, and expanding an expert neither moves nor recolours the
  // other experts.
  void expertGraphLayoutIsStable() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* gv = viewOf<ExpertGraphView>(w);
    w.tabs()->setCurrentWidget(gv);
    settle(w);
    // node rows of the CSV: expert -> "x,y" (and the count of neuron rows)
    auto experts = [&](int* neurons) {
      std::map<int, QString> pos;
      *neurons = 0;
      for (const QString& line : gv->csvData().split('\n')) {
        const QStringList f = line.split(',');
        if (f.size() < 7 || f[0] != "node") continue;
        if (f[2].toInt() >= 0)
          ++*neurons;
        else
          pos[f[1].toInt()] = f[5] + "," + f[6];
      }
      return pos;
    };
    int neurons = 0;
    QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning() && !experts(&neurons).empty(), 30000);
    settle(w);
    const auto first = experts(&neurons);
    QCOMPARE(neurons, 0);
    // The canvas: the view's custom-painted figure widget.
    QWidget* canvas = nullptr;
    for (QWidget* c : gv->findChildren<QWidget*>())
      if (c->property("vectorFigure").toBool()) canvas = c;
    QVERIFY(canvas);
    qInfo() << "experts laid out" << first.size() << "expert 0 at" << first.at(0);
    // Colour of the expert farthest from expert 3, sampled inside its disc.
    auto centre = [&](const QString& xy) {
      const double x = xy.section(',', 0, 0).toDouble(), y = xy.section(',', 1, 1).toDouble();
      const QRectF a(70, 80, std::max(50, canvas->width() - 210), std::max(50, canvas->height() - 150));
      return QPointF(a.left() + (x + 1) / 2 * a.width(), a.top() + (y + 1) / 2 * a.height());
    };
    int far = 0;
    for (const auto& [e, xy] : first)
      if (QLineF(centre(xy), centre(first.at(3))).length() >
          QLineF(centre(first.at(far)), centre(first.at(3))).length())
        far = e;
    const QPoint probe = (centre(first.at(far)) + QPointF(0, 6.5)).toPoint();
    const QColor before = canvas->grab().toImage().pixelColor(probe);
    gv->refresh();  // a redraw: same layout
    QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning() && !experts(&neurons).empty(), 30000);
    settle(w);
    QVERIFY(experts(&neurons) == first);
    gv->toggleExpert(3);
    QTRY_VERIFY_WITH_TIMEOUT(!gv->layoutRunning() && experts(&neurons).size() == first.size() && neurons > 0, 30000);
    settle(w);
    const auto expanded = experts(&neurons);
    qInfo() << "expert 3 expanded into" << neurons << "neurons; probe colour before" << before.name() << "after"
            << canvas->grab().toImage().pixelColor(probe).name();
    QCOMPARE(neurons, 16);  // the fake workspace's experts have 16 neurons each
    QVERIFY(expanded == first);
    QCOMPARE(canvas->grab().toImage().pixelColor(probe), before);
  }

  // Issue 17: a front.json written by hand opens from the tree in the Front
  // view: one graph per method the file lists (none assumed), with its points
  // at their measured FLOP fraction (the bound dashed at its neuron budget),
  // dense as a line, the tables' cells, and exports (PNG at 96 and 300 dpi,
  // SVG, PDF, CSV) whose titles, captions and axis labels are not cut at
  // 1366x768. A screenshot of the window is saved in the test's folder.
  void frontViewDrawsEveryMethodOfTheFront() {
    QTemporaryDir tmp, out;
    if (qEnvironmentVariableIsSet("MOEFY_KEEP_FIGURES")) {  // look at the exports and the screenshot by hand
      out.setAutoRemove(false);
      qInfo() << "front figures kept in" << out.path();
    }
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    const nlohmann::json doc = test::frontDocument((ws_ + "/corpus").toStdString());
    const QString frontDir = ws + "/fronts/front-a";
    test::writeFront(frontDir.toStdString(), doc);
    // Parts of the front: a router folder of per-budget routers (per-layer)
    // and a plain router. They stay out of the tree and the pickers.
    for (const char* r : {"/routers/per-layer/b0.25", "/routers/plain"}) {
      QVERIFY(QDir().mkpath(frontDir + r));
      QFile f(frontDir + r + "/router.json");
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write(R"({"format": "moefy-router", "version": 1})");
    }
    const auto& methods = doc["methods"];
    QVERIFY(methods.size() >= 4);
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    QCOMPARE(w.context()->paths("front").size(), 1);
    QCOMPARE(QFileInfo(w.context()->paths("front")[0]).canonicalFilePath(), QFileInfo(frontDir).canonicalFilePath());
    QCOMPARE(w.context()->paths("router").size(), 0);
    // Clicking the front in the tree opens the Front view on it.
    auto* tree = w.findChild<QTreeWidget*>("workspaceTree");
    QVERIFY(tree);
    QTreeWidgetItem* item = nullptr;
    for (QTreeWidgetItemIterator it(tree); *it; ++it)
      if ((*it)->data(0, Qt::UserRole).toString() == "front") item = *it;
    QVERIFY(item);
    QVERIFY2(item->toolTip(0).startsWith("front of plain"), qPrintable(item->toolTip(0)));
    w.tabs()->setCurrentIndex(0);
    tree->scrollToItem(item);
    settle(w);
    QTest::mouseClick(tree->viewport(), Qt::LeftButton, {}, tree->visualItemRect(item).center());
    settle(w);
    QCOMPARE(w.tabs()->tabText(w.tabs()->currentIndex()), QString("Front"));
    auto* fv = viewOf<FrontView>(w);
    QVERIFY(fv);
    QCOMPARE(w.tabs()->currentWidget(), static_cast<QWidget*>(fv));
    QVERIFY2(fv->hasData(), qPrintable(fv->errorText()));
    QVERIFY(fv->errorText().isEmpty());

    // One graph per method in the file's order, then dense.
    int checked = 0;
    for (QCustomPlot* plot : {fv->perplexityPlot(), fv->top1Plot()}) {
      const bool ppl = plot == fv->perplexityPlot();
      QCOMPARE(plot->graphCount(), int(methods.size()) + 1);
      for (size_t i = 0; i < methods.size(); ++i) {
        const std::string name = methods[i]["name"].get<std::string>();
        const auto& points = methods[i]["points"];
        QCPGraph* g = plot->graph(int(i));
        QCOMPARE(g->property("method").toString(), QString::fromStdString(name));
        QCOMPARE(g->data()->size(), int(points.size()));
        QCOMPARE(g->pen().style(), name == "bound" ? Qt::DashLine : Qt::SolidLine);
        for (const auto& p : points) {
          // The bound at its neuron budget (k/E), every method at its measured FLOP fraction.
          const double x = p[name == "bound" ? "fraction" : "ffn_flops_fraction"].get<double>();
          const double y = p[ppl ? "perplexity" : "top1_agreement"].get<double>();
          auto it = g->data()->findBegin(x, false);
          QVERIFY(it != g->data()->constEnd());
          QVERIFY2(std::abs(it->key - x) < 1e-12 && std::abs(it->value - y) < 1e-9,
                   qPrintable(QString("%1: point (%2, %3) drawn at (%4, %5)")
                                  .arg(QString::fromStdString(name))
                                  .arg(x)
                                  .arg(y)
                                  .arg(it->key)
                                  .arg(it->value)));
          ++checked;
        }
      }
      QCPGraph* dense = plot->graph(int(methods.size()));
      QCOMPARE(dense->property("method").toString(), QString("dense"));
      QCOMPARE(dense->data()->size(), 2);
      for (auto it = dense->data()->constBegin(); it != dense->data()->constEnd(); ++it)
        QCOMPARE(it->value, ppl ? 100.0 : 1.0);
      QVERIFY(plot->xAxis->label().contains("FFN FLOPs"));
    }
    qInfo() << "front view: points checked" << checked << "methods" << int(methods.size());
    QCOMPARE(int(fv->perplexityPlot()->yAxis->scaleType()), int(QCPAxis::stLogarithmic));
    {
      // The log axis carries labelled ticks inside its range whatever the range
      // spans (a linear ticker left a sub-decade range with one tick or none).
      QCustomPlot* p = fv->perplexityPlot();
      p->replot(QCustomPlot::rpImmediateRefresh);
      int inside = 0;
      for (double t : p->yAxis->tickVector()) inside += p->yAxis->range().contains(t);
      qInfo() << "perplexity axis" << p->yAxis->range().lower << p->yAxis->range().upper << "ticks inside" << inside;
      QVERIFY(inside >= 2);
    }

    // The tables: every method at every budget; the best per budget and its change over plain.
    const std::vector<double> budgets = doc["budgets"].get<std::vector<double>>();
    QTableWidget* pts = fv->pointsTable();
    QCOMPARE(pts->rowCount(), int(methods.size() * budgets.size()));
    int row = 0, dashes = 0;
    for (const auto& m : methods)
      for (double b : budgets) {
        const std::string name = m["name"].get<std::string>();
        QCOMPARE(pts->item(row, 0)->text(),
                 name == "bound" ? QString("top-k act. bound") : QString::fromStdString(name));
        QCOMPARE(pts->item(row, 1)->data(Qt::UserRole).toDouble(), b);
        const nlohmann::json* point = nullptr;
        for (const auto& p : m["points"])
          if (p["budget"].get<double>() == b) point = &p;
        if (!point) {
          QCOMPARE(pts->item(row, 5)->text(), QString("-"));
          ++dashes;
        } else {
          QCOMPARE(pts->item(row, 2)->text(), QString::number((*point)["ffn_flops_fraction"].get<double>(), 'f', 4));
          QCOMPARE(pts->item(row, 3)->text(), QString::number((*point)["fraction"].get<double>(), 'f', 4));
          QCOMPARE(pts->item(row, 4)->text(), QString::number((*point)["mean_k"].get<double>(), 'f', 2));
          QCOMPARE(pts->item(row, 5)->text(), QString::number((*point)["perplexity"].get<double>(), 'f', 2));
          QCOMPARE(pts->item(row, 6)->text(), QString::number((*point)["top1_agreement"].get<double>(), 'f', 4));
        }
        ++row;
      }
    QCOMPARE(dashes, 2);  // shared and dynamic-k have no point at 0.125
    QTableWidget* best = fv->bestTable();
    QCOMPARE(best->rowCount(), int(budgets.size()));
    for (int r = 0; r < best->rowCount(); ++r) {
      const auto& e = doc["best"][size_t(r)];
      const double bestPpl = e["perplexity"].get<double>(), plainPpl = e["plain_perplexity"].get<double>();
      const QString change = QString::asprintf("%+.1f %%", (bestPpl / plainPpl - 1) * 100);
      qInfo() << "best at" << budgets[size_t(r)] << best->item(r, 1)->text() << best->item(r, 2)->text() << "plain"
              << best->item(r, 3)->text() << best->item(r, 4)->text();
      QCOMPARE(best->item(r, 0)->data(Qt::UserRole).toDouble(), budgets[size_t(r)]);
      QCOMPARE(best->item(r, 1)->text(), QString::fromStdString(e["method"].get<std::string>()));
      QCOMPARE(best->item(r, 2)->text(), QString::number(bestPpl, 'f', 2));
      QCOMPARE(best->item(r, 3)->text(), QString::number(plainPpl, 'f', 2));
      QCOMPARE(best->item(r, 4)->text(), change);
    }
    // At 50 % a method with a shared expert beats plain here (perplexity 157 or lower against 175).
    QVERIFY2(best->item(2, 1)->text() != "plain" && best->item(2, 4)->text().startsWith("-"),
             qPrintable(best->item(2, 4)->text()));
    QVERIFY2(fv->dataCaption().startsWith("data: ") && fv->dataCaption().contains("of corpus") &&
                 fv->dataCaption().contains("seed 0"),
             qPrintable(fv->dataCaption()));

    // Exports: the figure is the two plots; no text is cut at 1366x768.
    for (QCustomPlot* p : {fv->perplexityPlot(), fv->top1Plot()}) p->replot(QCustomPlot::rpImmediateRefresh);
    settle(w);
    QVERIFY(w.grab().save(out.filePath("front-view-1366x768.png")));
    qInfo() << "screenshot" << out.filePath("front-view-1366x768.png") << "window" << w.size() << "figure"
            << fv->figureRoot()->size();
    const QString stem = out.filePath(fv->figureBaseName());
    QString err;
    QVERIFY2(fv->exportTo(stem + "-96.png", "png", 96, &err), qPrintable(err));
    QVERIFY2(fv->exportTo(stem + "-300.png", "png", 300, &err), qPrintable(err));
    const QImage lo(stem + "-96.png"), hi(stem + "-300.png");
    QWidget* root = fv->figureRoot();
    QCOMPARE(lo.size(), root->size());
    for (QCustomPlot* plot : {fv->perplexityPlot(), fv->top1Plot()}) {
      const QString problem = clippedText(lo, hi, root, plot);
      QVERIFY2(problem.isEmpty(), qPrintable(problem));
      const QRect axis = plot->axisRect()->rect();
      QVERIFY2(axis.contains(plot->legend->outerRect()), "the legend lies inside the plot area");
    }
    QVERIFY2(fv->exportTo(stem + ".svg", "svg", 96, &err), qPrintable(err));
    QFile svgFile(stem + ".svg");
    QVERIFY(svgFile.open(QIODevice::ReadOnly));
    const QString svg = QString::fromUtf8(svgFile.readAll());
    QStringList texts{"Held-out perplexity vs FFN FLOPs",
                      "Top-1 agreement vs FFN FLOPs",
                      "FFN FLOPs / dense",
                      "held-out perplexity (log)",
                      "top-1 agreement with dense",
                      "top-k act. bound",
                      "dense"};
    for (const auto& m : methods)
      if (m["name"] != "bound") texts << QString::fromStdString(m["name"].get<std::string>());
    for (const QString& t : texts) QVERIFY2(svg.contains(t), qPrintable(t));
    QVERIFY2(fv->exportTo(stem + ".pdf", "pdf", 96, &err), qPrintable(err));
    QVERIFY(QFileInfo(stem + ".pdf").size() > 1000);
    QVERIFY2(fv->exportCsv(stem + ".csv", &err), qPrintable(err));
    QFile csvFile(stem + ".csv");
    QVERIFY(csvFile.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList lines = QString::fromUtf8(csvFile.readAll()).split('\n', Qt::SkipEmptyParts);
    QVERIFY(lines.value(0).startsWith("method,router,budget,ffn_flops_fraction"));
    QCOMPARE(lines.size(), checked / 2 + 2);  // header, one line per point, dense
    for (const auto& m : methods)
      for (const auto& p : m["points"]) {
        const QString prefix = QString::fromStdString(m["name"].get<std::string>()) + ",";
        const QString ppl = QString::number(p["perplexity"].get<double>(), 'g', 8);
        bool found = false;
        for (const QString& l : lines) found |= l.startsWith(prefix) && l.contains("," + ppl + ",");
        QVERIFY2(found, qPrintable(prefix + ppl));
      }
    QVERIFY(lines.last().startsWith("dense,"));
  }

  // Issue 17: a damaged front.json shows the reader's one-line error in the
  // view (naming the file and key) and in the issues dock, not a crash; the
  // next front is drawn again.
  void frontViewShowsTheReadersErrorForADamagedFront() {
    QTemporaryDir tmp;
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    test::writeFront((ws + "/fronts/a-good").toStdString(), test::frontDocument());
    nlohmann::json bad = test::frontDocument();
    bad["best"][1]["perplexity"] = 1.5;  // not the best method's point
    test::writeFront((ws + "/fronts/b-bad").toStdString(), bad);
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    const QStringList fronts = w.context()->paths("front");
    QCOMPARE(fronts.size(), 2);
    QVERIFY(fronts[0].endsWith("a-good") && fronts[1].endsWith("b-bad"));
    auto* fv = viewOf<FrontView>(w);
    QVERIFY(fv);
    w.tabs()->setCurrentWidget(fv);
    settle(w);
    QVERIFY(fv->hasData());
    w.context()->setCurrent("front", fronts[1]);
    settle(w);
    QVERIFY(!fv->hasData());
    qInfo() << "damaged front:" << fv->errorText();
    QVERIFY2(fv->errorText().contains("b-bad/front.json") && fv->errorText().contains("best[1].perplexity"),
             qPrintable(fv->errorText()));
    checkDamagedShown(w, fv, "Cannot read this front", "b-bad/front.json", "best[1].perplexity", QDir(tmp.path()));
    if (QTest::currentTestFailed()) return;
    QVERIFY(fv->csvData().count('\n') == 1);  // the header only
    // The good one is drawn again.
    w.context()->setCurrent("front", fronts[0]);
    settle(w);
    QVERIFY(fv->hasData());
    QVERIFY(fv->errorText().isEmpty());
    QCOMPARE(fv->perplexityPlot()->graphCount(), int(test::frontDocument()["methods"].size()) + 1);
  }

  // Issue 16: the Experts view draws the tensors readMoeAnalysis returns: every
  // similarity measure and projection, the router similarity, the rank counts
  // per layer and summed, the co-occurrence (diagonal removed), the usage bars
  // in descending order; a click selects an expert everywhere and every
  // expert-indexed panel outlines it.
  void expertsViewDrawsTheAnalysis() {
    const QString ws = analysisWorkspace();
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    const QStringList analyses = w.context()->paths("analysis");
    QCOMPARE(analyses.size(), 3);
    QVERIFY(analyses[0].endsWith("a-mixtral"));
    // The tree lists them under Analyses with the core's summary; a click opens the Experts view.
    auto* tree = w.findChild<QTreeWidget*>("workspaceTree");
    QVERIFY(tree);
    QTreeWidgetItem* item = nullptr;
    for (QTreeWidgetItemIterator it(tree); *it; ++it)
      if ((*it)->data(0, Qt::UserRole).toString() == "analysis" && (*it)->text(0) == "a-mixtral") item = *it;
    QVERIFY(item);
    QVERIFY2(item->toolTip(0).startsWith("MoE analysis of mixtral, E=4 top-2, sites blk.0, blk.1, 24 corpus tokens"),
             qPrintable(item->toolTip(0)));
    QVERIFY(item->parent() && item->parent()->text(0).startsWith("Analyses (3)"));
    w.tabs()->setCurrentIndex(0);
    tree->scrollToItem(item);
    settle(w);
    QTest::mouseClick(tree->viewport(), Qt::LeftButton, {}, tree->visualItemRect(item).center());
    settle(w);
    QCOMPARE(w.tabs()->tabText(w.tabs()->currentIndex()), QString("Experts"));
    auto* ev = viewOf<ExpertsView>(w);
    QVERIFY(ev);
    QVERIFY2(ev->hasData(), qPrintable(ev->errorText()));
    QCOMPARE(ev->layerCombo()->count(), 2);
    QCOMPARE(ev->layerCombo()->itemText(1), QString("blk.1"));

    const MoeAnalysis core = readMoeAnalysis(analyses[0].toStdString());
    // Max |drawn - stored| over a heatmap's cells (NaN where `dropDiagonal`).
    auto heatDiff = [&](ExpertsView::Panel p, const std::string& tensor, bool dropDiagonal) {
      const at::Tensor t = core.tensor(tensor).to(at::kDouble);
      QCPColorMapData* d = ev->heatmap(p)->data();
      if (d->keySize() != t.size(1) || d->valueSize() != t.size(0)) return std::numeric_limits<double>::infinity();
      double m = 0;
      for (int r = 0; r < t.size(0); ++r)
        for (int c = 0; c < t.size(1); ++c) {
          const double drawn = d->cell(c, r);
          if (dropDiagonal && r == c) {
            if (!std::isnan(drawn)) return std::numeric_limits<double>::infinity();
            continue;
          }
          m = std::max(m, std::abs(drawn - t[r][c].item<double>()));
        }
      return m;
    };
    double maxDiff = 0;
    int compared = 0;
    for (int li = 0; li < 2; ++li) {
      ev->layerCombo()->setCurrentIndex(li);
      settle(w);
      const std::string site = "blk." + std::to_string(ev->layer()) + ".";
      QCOMPARE(ev->layer(), li);
      for (int m = 0; m < ev->measureCombo()->count(); ++m) {
        ev->measureCombo()->setCurrentIndex(m);
        for (int p = 0; p < std::max(1, ev->projectionCombo()->count()); ++p) {
          if (ev->projectionCombo()->count() > 0) ev->projectionCombo()->setCurrentIndex(p);
          settle(w);
          const std::string name = site + ev->similarityTensor().toStdString();
          QVERIFY2(core.has(name), name.c_str());
          maxDiff = std::max(maxDiff, heatDiff(ExpertsView::Similarity, name, false));
          ++compared;
        }
      }
      maxDiff = std::max(maxDiff, heatDiff(ExpertsView::RouterSimilarity, site + "router_sim", false));
      maxDiff = std::max(maxDiff, heatDiff(ExpertsView::Cooccurrence, site + "cooccurrence", true));
      ev->rankScopeCombo()->setCurrentIndex(0);
      settle(w);
      maxDiff = std::max(maxDiff, heatDiff(ExpertsView::RankCounts, site + "rank_counts", false));
      QVERIFY2(
          ev->caption(ExpertsView::RankCounts)
              .contains(QString::number(
                  core.meta["sites"]["blk." + std::to_string(li)]["dynamic"]["top1_norm_share"].get<double>(), 'f', 3)),
          qPrintable(ev->caption(ExpertsView::RankCounts)));
      ev->rankScopeCombo()->setCurrentIndex(1);
      settle(w);
      maxDiff = std::max(maxDiff, heatDiff(ExpertsView::RankCounts, "rank_counts", false));
      QVERIFY2(ev->caption(ExpertsView::RankCounts)
                   .contains(QString::number(core.meta["top1_norm_share"].get<double>(), 'f', 3)),
               qPrintable(ev->caption(ExpertsView::RankCounts)));
      compared += 4;
      // Usage: bars in descending order of the stored share, on a log axis.
      const at::Tensor usage = core.tensor(site + "usage").to(at::kDouble);
      const std::vector<int> order = ev->usageOrder();
      QCOMPARE(int(order.size()), 4);
      auto* bars = qobject_cast<QCPBars*>(ev->plot(ExpertsView::Usage)->plottable(0));
      QVERIFY(bars);
      QCOMPARE(bars->data()->size(), 4);
      for (int i = 0; i < 4; ++i) {
        const double u = usage[order[size_t(i)]].item<double>();
        if (i > 0) QVERIFY(usage[order[size_t(i - 1)]].item<double>() >= u);
        QCOMPARE((bars->data()->begin() + i)->value, u);  // no dead expert in this analysis
      }
      QCOMPARE(ev->plot(ExpertsView::Usage)->yAxis->scaleType(), QCPAxis::stLogarithmic);
      const QString usageCaption = ev->caption(ExpertsView::Usage);
      QVERIFY2(usageCaption.contains(
                   "usage perplexity " +
                   QString::number(
                       core.meta["sites"][site.substr(0, site.size() - 1)]["dynamic"]["usage_perplexity"].get<double>(),
                       'f', 3)) &&
                   usageCaption.contains("dead 0.000"),
               qPrintable(usageCaption));
      qInfo() << "layer" << li << "usage order" << QVector<int>(order.begin(), order.end());
    }
    qInfo() << "experts view: compared" << compared << "heatmaps with readMoeAnalysis, max |difference|" << maxDiff;
    QCOMPARE(maxDiff, 0.0);

    // Linked selection: a click on row 2 of the similarity heatmap at blk.1.
    ev->measureCombo()->setCurrentIndex(0);
    settle(w);
    QCustomPlot* simPlot = ev->plot(ExpertsView::Similarity);
    simPlot->replot(QCustomPlot::rpImmediateRefresh);
    const QPoint cell(int(simPlot->xAxis->coordToPixel(1)), int(simPlot->yAxis->coordToPixel(2)));
    QCOMPARE(ev->expertAt(ExpertsView::Similarity, cell), 2);
    QTest::mouseClick(simPlot, Qt::LeftButton, {}, cell);
    settle(w);
    QCOMPARE(w.context()->selectedLayer(), 1);
    QCOMPARE(w.context()->selectedExpert(), 2);
    auto outlines = [&](ExpertsView::Panel p) {
      QList<QCPAbstractItem*> out;
      for (int i = 0; i < ev->plot(p)->itemCount(); ++i)
        if (ev->plot(p)->item(i)->property("selectedExpert").isValid()) out << ev->plot(p)->item(i);
      return out;
    };
    auto checkOutlines = [&](int e) {
      for (auto p : {ExpertsView::Similarity, ExpertsView::RouterSimilarity, ExpertsView::Cooccurrence}) {
        const auto items = outlines(p);
        if (items.size() != 2) return QString("panel %1: %2 outlines").arg(int(p)).arg(items.size());
        auto* row = qobject_cast<QCPItemRect*>(items[0]);
        if (!row || row->property("selectedExpert").toInt() != e || row->topLeft->coords().y() != e - 0.5 ||
            row->bottomRight->coords().y() != e + 0.5)
          return QString("panel %1: the row outline is not on expert %2").arg(int(p)).arg(e);
      }
      const auto usage = outlines(ExpertsView::Usage);
      const auto pos = std::find(ev->usageOrder().begin(), ev->usageOrder().end(), e) - ev->usageOrder().begin();
      auto* bar = usage.size() == 1 ? qobject_cast<QCPItemRect*>(usage[0]) : nullptr;
      if (!bar || std::abs((bar->topLeft->coords().x() + bar->bottomRight->coords().x()) / 2 - double(pos)) > 1e-9)
        return QString("usage: the outline is not on expert %1's bar").arg(e);
      const auto pca = outlines(ExpertsView::Pca);
      const at::Tensor pts = core.tensor("blk.1.pca.experts").to(at::kDouble);
      auto* ring = pca.size() == 1 ? qobject_cast<QCPItemEllipse*>(pca[0]) : nullptr;
      if (!ring || std::abs((ring->topLeft->coords().x() + ring->bottomRight->coords().x()) / 2 -
                            pts[e][0].item<double>()) > 1e-9)
        return QString("pca: the ring is not on expert %1").arg(e);
      if (!outlines(ExpertsView::RankCounts).isEmpty()) return QString("the rank panel (by rank) has an outline");
      return QString();
    };
    QString problem = checkOutlines(2);
    QVERIFY2(problem.isEmpty(), qPrintable(problem));
    // A click on the first usage bar selects the most used expert.
    QCustomPlot* usagePlot = ev->plot(ExpertsView::Usage);
    usagePlot->replot(QCustomPlot::rpImmediateRefresh);
    const QPoint firstBar(int(usagePlot->xAxis->coordToPixel(0)), usagePlot->axisRect()->center().y());
    QTest::mouseClick(usagePlot, Qt::LeftButton, {}, firstBar);
    settle(w);
    QCOMPARE(w.context()->selectedExpert(), ev->usageOrder()[0]);
    problem = checkOutlines(ev->usageOrder()[0]);
    QVERIFY2(problem.isEmpty(), qPrintable(problem));
    // A click on expert 3's PCA marker selects it.
    QCustomPlot* pcaPlot = ev->plot(ExpertsView::Pca);
    pcaPlot->replot(QCustomPlot::rpImmediateRefresh);
    const at::Tensor pts = core.tensor("blk.1.pca.experts").to(at::kDouble);
    const QPoint marker(int(pcaPlot->xAxis->coordToPixel(pts[3][0].item<double>())),
                        int(pcaPlot->yAxis->coordToPixel(pts[3][1].item<double>())));
    QTest::mouseClick(pcaPlot, Qt::LeftButton, {}, marker);
    settle(w);
    QCOMPARE(w.context()->selectedExpert(), 3);
    problem = checkOutlines(3);
    QVERIFY2(problem.isEmpty(), qPrintable(problem));
    // The rank panel is indexed by rank: a click there selects nothing.
    QCOMPARE(ev->expertAt(ExpertsView::RankCounts, cell), -1);

    // The weights-only analysis: the dynamic panels say they need a corpus.
    w.context()->setCurrent("analysis", analyses[1]);
    settle(w);
    QVERIFY2(ev->hasData(), qPrintable(ev->errorText()));
    QVERIFY(ev->caption(ExpertsView::Usage).contains("needs a corpus"));
    QVERIFY(ev->caption(ExpertsView::Cooccurrence).contains("needs a corpus"));
    QVERIFY(ev->usageOrder().empty());
    QVERIFY(ev->heatmap(ExpertsView::RouterSimilarity)->visible());
  }

  // Issue 16: the Experts figure exports for one layer (PNG/SVG/PDF/CSV, no
  // text cut at 1366x768) and for all layers at once (one file per layer),
  // with a per-layer or one global colour scale.
  void expertsViewExportsOneAndAllLayers() {
    const QString ws = analysisWorkspace();
    QVERIFY(!ws.isEmpty());
    QTemporaryDir out;
    if (qEnvironmentVariableIsSet("MOEFY_KEEP_FIGURES")) {
      out.setAutoRemove(false);
      qInfo() << "experts figures kept in" << out.path();
    }
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* ev = viewOf<ExpertsView>(w);
    QVERIFY(ev);
    w.tabs()->setCurrentWidget(ev);
    w.context()->setCurrent("analysis", w.context()->paths("analysis").value(0));
    w.context()->selectExpert(0, 1);  // a highlight in the figure too
    settle(w);
    QVERIFY2(ev->hasData(), qPrintable(ev->errorText()));
    QCOMPARE(ev->layer(), 0);
    for (int p = 0; p < ExpertsView::PanelCount; ++p)
      ev->plot(ExpertsView::Panel(p))->replot(QCustomPlot::rpImmediateRefresh);
    settle(w);
    QVERIFY(w.grab().save(out.filePath("experts-view-1366x768.png")));
    qInfo() << "window" << w.size() << "figure" << ev->figureRoot()->size();
    const QString stem = out.filePath(ev->figureBaseName());
    QCOMPARE(ev->figureBaseName(), QString("experts-L0"));
    QString err;
    QVERIFY2(ev->exportTo(stem + "-96.png", "png", 96, &err), qPrintable(err));
    QVERIFY2(ev->exportTo(stem + "-300.png", "png", 300, &err), qPrintable(err));
    const QImage lo(stem + "-96.png"), hi(stem + "-300.png");
    QCOMPARE(lo.size(), ev->figureRoot()->size());
    for (int p = 0; p < ExpertsView::PanelCount; ++p) {
      const QString problem = clippedText(lo, hi, ev->figureRoot(), ev->plot(ExpertsView::Panel(p)));
      QVERIFY2(problem.isEmpty(), qPrintable(problem));
    }
    QVERIFY2(ev->exportTo(stem + ".svg", "svg", 96, &err), qPrintable(err));
    QFile svgFile(stem + ".svg");
    QVERIFY(svgFile.open(QIODevice::ReadOnly));
    const QString svg = QString::fromUtf8(svgFile.readAll());
    for (const QString& t : QStringList{"Expert similarity", "Router similarity", "Rank: router vs norm",
                                        "Expert usage", "Co-occurrence", "PCA of experts", "perplexity", "largest"})
      QVERIFY2(svg.contains(t), qPrintable(t));
    QVERIFY2(ev->exportTo(stem + ".pdf", "pdf", 96, &err), qPrintable(err));
    QVERIFY(QFileInfo(stem + ".pdf").size() > 1000);
    QVERIFY2(ev->exportCsv(stem + ".csv", &err), qPrintable(err));
    QFile csv(stem + ".csv");
    QVERIFY(csv.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList lines = QString::fromUtf8(csv.readAll()).split('\n', Qt::SkipEmptyParts);
    QCOMPARE(lines.value(0), QString("panel,site,row,column,value"));
    // sim.gate, router_sim, cooccurrence, rank_counts (16 each), usage (4), PCA of experts (8) and neurons (384).
    QCOMPARE(lines.size(), 1 + 4 * 16 + 4 + 8 + 384);
    QVERIFY(lines.value(1).startsWith("sim.gate,blk.0,0,0,"));

    // Colour scales: per layer, each layer's own range; global, one range over both layers.
    const MoeAnalysis core = readMoeAnalysis(w.context()->paths("analysis").value(0).toStdString());
    auto range = [&](const std::string& name) {
      const at::Tensor t = core.tensor(name).to(at::kDouble);
      return std::make_pair(t.min().item<double>(), t.max().item<double>());
    };
    const auto r0 = range("blk.0.sim.gate"), r1 = range("blk.1.sim.gate");
    for (int global : {0, 1}) {
      ev->scaleModeCombo()->setCurrentIndex(global);
      for (int li : {0, 1}) {
        ev->layerCombo()->setCurrentIndex(li);
        settle(w);
        const QCPRange drawn = ev->heatmap(ExpertsView::Similarity)->dataRange();
        const auto want =
            global ? std::make_pair(std::min(r0.first, r1.first), std::max(r0.second, r1.second)) : (li == 0 ? r0 : r1);
        qInfo() << (global ? "global" : "per-layer") << "scale, layer" << li << "range" << drawn.lower << drawn.upper;
        QCOMPARE(drawn.lower, want.first);
        QCOMPARE(drawn.upper, want.second);
      }
    }
    QVERIFY(r0 != r1);  // the two modes differ on this checkpoint
    // All layers at once, in both scale modes: one file per layer.
    for (int global : {0, 1}) {
      ev->scaleModeCombo()->setCurrentIndex(global);
      const QString dir = out.filePath(global ? "all-global" : "all-per-layer");
      const QStringList files = ev->exportAllLayers(dir, "png", 96, &err);
      QVERIFY2(err.isEmpty(), qPrintable(err));
      QCOMPARE(files.size(), 2);
      QCOMPARE(QDir(dir).entryList({"*.png"}, QDir::Files), (QStringList{"experts-L0.png", "experts-L1.png"}));
      for (const QString& f : files) QCOMPARE(QImage(f).size(), ev->figureRoot()->size());
    }
  }

  // Issue 16: a damaged analysis shows the reader's one-line error (naming the
  // file and tensor) in the view and the issues dock; the good one draws again.
  void expertsViewShowsTheReadersErrorForADamagedAnalysis() {
    const QString ws = analysisWorkspace();
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    const QStringList analyses = w.context()->paths("analysis");
    QCOMPARE(analyses.size(), 3);
    QVERIFY(analyses[2].endsWith("c-damaged"));
    auto* ev = viewOf<ExpertsView>(w);
    QVERIFY(ev);
    w.tabs()->setCurrentWidget(ev);
    w.context()->setCurrent("analysis", analyses[2]);
    settle(w);
    QVERIFY(!ev->hasData());
    qInfo() << "damaged analysis:" << ev->errorText();
    QVERIFY2(
        ev->errorText().contains("c-damaged/analysis.safetensors") && ev->errorText().contains("'blk.0.router_sim'"),
        qPrintable(ev->errorText()));
    checkDamagedShown(w, ev, "Cannot read this analysis", "c-damaged/analysis", "blk.0.router_sim", QDir::temp());
    if (QTest::currentTestFailed()) return;
    w.context()->setCurrent("analysis", analyses[0]);
    settle(w);
    QVERIFY(ev->hasData());
    QVERIFY(ev->errorText().isEmpty());
  }

  // Issue 20, router diagnostics: `moefy record/split/route` on the shared
  // model write mlp, similarity and oracle routers of one partition (4
  // sites). The Router view's Diagnostics panel draws the mlp router's loss
  // per epoch at the picked site (train solid, held-out dashed), one point
  // per epoch equal to router.json's training block (RouterSet::read's
  // `training`), one bar group per site equal to its `metrics` block with
  // the picked site outlined, the load balance of the shown choices in the
  // caption (checked against the usage perplexity and dead share of the
  // CSV's top-k), the diagnostics in the CSV, exports, the "no training"
  // note for similarity and oracle, and the panel inside a 1366x768 window.
  void routerDiagnosticsPanel() {
    QTemporaryDir tmp;
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    const QString model = ws_ + "/model", rec = ws + "/recordings/rec", part = ws + "/partitions/part";
    QVERIFY(test::runCliStep(
        {"record", model, ws_ + "/corpus", "--out", rec, "--tokens", "1500", "--seq-len", "64", "--samples", "400"}));
    QVERIFY(test::runCliStep(
        {"split", rec, "--method", "random", "--experts", "8", "--seed", "1", "--no-stability", "--out", part}));
    const int epochs = 4;
    for (const char* kind : {"mlp", "similarity", "oracle"})
      QVERIFY(test::runCliStep({"route", model, rec, part, "--router", kind, "--top-k", "2", "--epochs",
                                QString::number(epochs), "--held-out", "0.2", "--out", ws + "/routers/" + kind}));
    const RouterSet rs = RouterSet::read((ws + "/routers/mlp").toStdString());
    QCOMPARE(int(rs.layers.size()), 4);

    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    auto* rv = viewOf<RouterView>(w);
    QVERIFY(rv);
    w.tabs()->setCurrentWidget(rv);
    settle(w);
    auto pickRouter = [&](const QString& kind) {
      auto* box = rv->findChild<QComboBox*>("routerPicker");
      if (!box) return false;
      const QString want = QFileInfo(ws + "/routers/" + kind).canonicalFilePath();
      for (int i = 0; i < box->count(); ++i)
        if (QFileInfo(box->itemData(i).toString()).canonicalFilePath() == want) {
          box->setCurrentIndex(i);
          settle(w);
          return true;
        }
      return false;
    };
    QVERIFY(pickRouter("mlp"));
    QComboBox* sites = rv->layerCombo();
    QVERIFY(sites && sites->count() == 4);
    sites->setCurrentIndex(2);
    settle(w);
    QVERIFY(rv->hasData());
    QVERIFY(!rv->diagnosticsShown());  // the choices first
    rv->showDiagnostics(true);
    settle(w);
    QVERIFY(rv->diagnosticsShown());
    QVERIFY(rv->trainingPlot()->isVisible() && rv->siteMetricsPlot()->isVisible());
    QVERIFY(!rv->scoresPlot()->isVisible());
    const int L = sites->currentData().toInt();
    const int idx = rs.indexOfLayer(L);
    QVERIFY(idx >= 0);

    // Training curves: one point per epoch, the values of router.json.
    const std::string key = siteJsonKey(rs.siteAt(idx));
    const nlohmann::json& ep = rs.training.at(key).at("epochs");
    QCOMPARE(int(ep.size()), epochs);
    QCustomPlot* tp = rv->trainingPlot();
    QVERIFY2(rv->trainingNote().isEmpty(), qPrintable(rv->trainingNote()));
    QCOMPARE(tp->graphCount(), 2);
    QCOMPARE(tp->graph(0)->pen().style(), Qt::SolidLine);
    QCOMPARE(tp->graph(1)->pen().style(), Qt::DashLine);
    double lossDiff = 0;
    for (int g = 0; g < 2; ++g) {
      QCOMPARE(tp->graph(g)->dataCount(), epochs);
      for (int e = 0; e < epochs; ++e) {
        const auto it = tp->graph(g)->data()->at(e);
        QCOMPARE(it->key, double(e + 1));
        const double want = ep[e].at(g == 0 ? "train" : "held_out").get<double>();
        lossDiff = std::max(lossDiff, std::abs(it->value - want));
      }
    }
    qInfo() << "training curves of" << rs.siteAt(idx).name().c_str() << ":" << epochs
            << "epochs, max |plotted - router.json| =" << lossDiff;
    QVERIFY(lossDiff <= 1e-12);
    QVERIFY(tp->yAxis->label().contains("BCE"));

    // Mass recall and overlap: one group per site, the values of router.json.
    QCustomPlot* mp = rv->siteMetricsPlot();
    QStringList names;
    for (size_t i = 0; i < rs.layers.size(); ++i) names << QString::fromStdString(rs.siteAt(i).name());
    QCOMPARE(rv->diagnosticSites(), names);
    QCOMPARE(rv->highlightedSite(), idx);
    QCOMPARE(mp->plottableCount(), 2);
    auto* recall = qobject_cast<QCPBars*>(mp->plottable(0));
    auto* overlap = qobject_cast<QCPBars*>(mp->plottable(1));
    QVERIFY(recall && overlap);
    QVERIFY(recall->barsGroup() && recall->barsGroup() == overlap->barsGroup());
    QCOMPARE(recall->dataCount(), names.size());
    QCOMPARE(overlap->dataCount(), names.size());
    double metricDiff = 0;
    for (int i = 0; i < names.size(); ++i) {
      const nlohmann::json& m = rs.metrics.at(siteJsonKey(rs.siteAt(size_t(i))));
      QCOMPARE(recall->data()->at(i)->key, double(i));
      QCOMPARE(overlap->data()->at(i)->key, double(i));
      metricDiff = std::max(metricDiff, std::abs(recall->data()->at(i)->value - m.at("mass_recall").get<double>()));
      metricDiff = std::max(metricDiff, std::abs(overlap->data()->at(i)->value - m.at("overlap").get<double>()));
    }
    qInfo() << "site metrics:" << names.size() << "groups, max |bar - router.json| =" << metricDiff;
    QVERIFY(metricDiff <= 1e-12);
    auto ticks = mp->xAxis->ticker().dynamicCast<QCPAxisTickerText>();
    QVERIFY(ticks);
    QCOMPARE(QStringList(ticks->ticks().values()), names);
    QCPItemRect* band = nullptr;
    for (int i = 0; i < mp->itemCount(); ++i)
      if (auto* r = qobject_cast<QCPItemRect*>(mp->item(i))) band = r;
    QVERIFY(band);
    QCOMPARE(band->topLeft->coords().x() + 0.5, double(idx));

    // Load balance: the usage perplexity exp(H)/E and the dead share of the
    // view's top-k (its CSV), recomputed here.
    const QString csv = rv->csvData();
    const QStringList tables = csv.split("\n\n");
    QCOMPARE(tables.size(), 3);
    const QStringList rows = tables[0].split('\n', Qt::SkipEmptyParts);
    const int topCol = rows[0].split(',').indexOf("router_topk");
    QVERIFY(topCol > 0);
    std::vector<double> count(8, 0.0);
    double total = 0;
    for (int r = 1; r < rows.size(); ++r)
      for (const QString& e : rows[r].split(',').value(topCol).split(' ', Qt::SkipEmptyParts))
        count[size_t(e.toInt())] += 1, total += 1;
    double entropy = 0;
    int dead = 0;
    for (double c : count) {
      if (c > 0) entropy -= c / total * std::log(c / total);
      dead += c == 0;
    }
    const double perplexity = std::exp(entropy) / 8.0;
    QVERIFY(rv->loadBalanceKnown());
    qInfo() << "load balance: perplexity" << rv->loadBalance().perplexity << "expected" << perplexity << "diff"
            << std::abs(rv->loadBalance().perplexity - perplexity) << "dead" << rv->loadBalance().dead << "of 8";
    QVERIFY(std::abs(rv->loadBalance().perplexity - perplexity) <= 1e-12);
    QCOMPARE(rv->loadBalance().dead, dead);
    QCOMPARE(rv->loadBalance().deadShare, dead / 8.0);
    QVERIFY2(rv->diagnosticsCaption().contains(QString::number(perplexity, 'f', 3)) &&
                 rv->diagnosticsCaption().contains(QString("dead experts %1 of 8").arg(dead)),
             qPrintable(rv->diagnosticsCaption()));

    // The CSV's diagnostics: the metrics of every site, the picked site's losses.
    const QStringList metricRows = tables[1].split('\n', Qt::SkipEmptyParts);
    QCOMPARE(metricRows.value(0), QString("router,site,mass_recall,overlap,samples,mean_k,picked"));
    QCOMPARE(metricRows.size(), 1 + names.size());
    for (int i = 0; i < names.size(); ++i) {
      const QStringList c = metricRows[i + 1].split(',');
      const nlohmann::json& m = rs.metrics.at(siteJsonKey(rs.siteAt(size_t(i))));
      QCOMPARE(c.value(1), names[i]);
      QVERIFY(std::abs(c.value(2).toDouble() - m.at("mass_recall").get<double>()) <= 1e-9);
      QVERIFY(std::abs(c.value(3).toDouble() - m.at("overlap").get<double>()) <= 1e-9);
      QCOMPARE(c.value(6), QString(i == idx ? "1" : "0"));
    }
    const QStringList lossRows = tables[2].split('\n', Qt::SkipEmptyParts);
    QCOMPARE(lossRows.value(0), QString("router,site,epoch,train_loss,held_out_loss"));
    QCOMPARE(lossRows.size(), 1 + epochs);
    for (int e = 0; e < epochs; ++e) {
      const QStringList c = lossRows[e + 1].split(',');
      QCOMPARE(c.value(2).toInt(), e + 1);
      QVERIFY(std::abs(c.value(3).toDouble() - ep[e].at("train").get<double>()) <= 1e-9);
      QVERIFY(std::abs(c.value(4).toDouble() - ep[e].at("held_out").get<double>()) <= 1e-9);
    }

    // The panel fits 1366x768: no visible widget of the view outside the
    // window, both plots of a usable size, the caption not cut.
    qInfo() << "window" << w.size() << "view minimum" << rv->minimumSizeHint() << "training plot" << tp->size()
            << "metrics plot" << mp->size();
    QVERIFY(w.width() <= 1366 && w.height() <= 768);
    QVERIFY2(rv->minimumSizeHint().width() <= 1366 - 16 - 240 - 260 - 24,
             qPrintable(QString("minimum width %1").arg(rv->minimumSizeHint().width())));
    for (QWidget* c : rv->findChildren<QWidget*>()) {
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
    QVERIFY(tp->width() >= 240 && tp->height() >= 150 && mp->width() >= 240 && mp->height() >= 150);
    auto* caption = rv->findChild<QLabel*>("routerDiagnosticsCaption");
    QVERIFY(caption && caption->isVisible());
    QVERIFY2(caption->height() >= caption->heightForWidth(caption->width()),
             qPrintable(QString("caption %1 px high, needs %2")
                            .arg(caption->height())
                            .arg(caption->heightForWidth(caption->width()))));

    // Exports of the shown panel, named as the diagnostics; a screenshot.
    const QDir out(QString::fromStdString(test::freshDir("gui_router_diagnostics").string()));
    QVERIFY2(rv->figureBaseName().startsWith("router-diagnostics"), qPrintable(rv->figureBaseName()));
    QString err;
    for (const char* fmt : {"png", "svg", "pdf"}) {
      const QString file = out.filePath(rv->figureBaseName() + "." + fmt);
      QVERIFY2(rv->exportTo(file, fmt, 96, &err), qPrintable(err));
      QVERIFY(QFileInfo(file).size() > 1000);
    }
    QVERIFY(w.grab().save(out.filePath("router-diagnostics-1366x768.png")));

    // Untrained routers: the note instead of curves; still one group per site.
    for (const char* kind : {"similarity", "oracle"}) {
      QVERIFY(pickRouter(kind));
      QVERIFY2(rv->hasData(), kind);
      QVERIFY(rv->diagnosticsShown());
      qInfo() << kind << "router note:" << rv->trainingNote();
      QVERIFY2(rv->trainingNote().contains("no training") && rv->trainingNote().contains(kind),
               qPrintable(rv->trainingNote()));
      for (int g = 0; g < rv->trainingPlot()->graphCount(); ++g) QCOMPARE(rv->trainingPlot()->graph(g)->dataCount(), 0);
      bool drawn = false;
      for (int i = 0; i < rv->trainingPlot()->itemCount(); ++i)
        if (auto* t = qobject_cast<QCPItemText*>(rv->trainingPlot()->item(i))) drawn |= t->text() == rv->trainingNote();
      QVERIFY(drawn);
      QCOMPARE(rv->diagnosticSites(), names);
      QCOMPARE(qobject_cast<QCPBars*>(rv->siteMetricsPlot()->plottable(0))->dataCount(), names.size());
      QVERIFY(rv->csvData().endsWith("router,site,epoch,train_loss,held_out_loss\n"));
    }
    // Back to the choices.
    rv->showDiagnostics(false);
    settle(w);
    QVERIFY(rv->scoresPlot()->isVisible() && !rv->trainingPlot()->isVisible());
    QVERIFY(rv->figureBaseName().startsWith("router-choices"));
    for (int i = 0; i < w.issues()->count(); ++i)
      QVERIFY2(!w.issues()->item(i)->text().contains("diagnostics"), qPrintable(w.issues()->item(i)->text()));
  }

  // Defect 9: the window fits a 1366x768 screen (less a title bar and a
  // panel), the inspector opens wide enough, can be widened, and does not
  // break numbers mid-digit.
  void windowFitsASmallScreen() {
    MainWindow w;
    w.resize(1366, 700);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    settle(w);
    const QSize minimum = w.minimumSizeHint().expandedTo(w.minimumSize());
    qInfo() << "main window minimum size" << minimum;
    QVERIFY2(minimum.width() <= 1366 - 16 && minimum.height() <= 768 - 68,
             qPrintable(QString("minimum %1x%2").arg(minimum.width()).arg(minimum.height())));
    for (int i = 0; i < w.tabs()->count(); ++i) {
      w.tabs()->setCurrentIndex(i);
      settle(w);
    }
    auto* dock = w.findChild<QDockWidget*>("inspectorDock");
    QVERIFY(dock);
    // The window's real minimum includes the docks (minimumSizeHint above
    // does not): every tab's content must leave room for them.
    qInfo() << "window" << w.size() << "central minimum" << w.centralWidget()->minimumSizeHint();
    for (int i = 0; i < w.tabs()->count(); ++i)
      QVERIFY2(w.tabs()->widget(i)->minimumSizeHint().width() <= 1366 - 16 - 240 - 260 - 24,
               qPrintable(w.tabs()->tabText(i) + " is too wide for a 1366 screen with its docks"));
    QVERIFY2(w.width() <= 1366, qPrintable(QString("window widened to %1").arg(w.width())));
    qInfo() << "inspector dock width" << dock->width();
    QVERIFY(dock->width() >= 260);
    w.resizeDocks({dock}, {520}, Qt::Horizontal);
    settle(w);
    qInfo() << "inspector dock width after widening to 520" << dock->width();
    QVERIFY(dock->width() >= 500);
    w.resizeDocks({dock}, {260}, Qt::Horizontal);
    settle(w);
    w.context()->setCurrent("recording", w.context()->paths("recording").value(0));
    w.context()->setCurrent("partition", w.context()->paths("partition").value(0));
    w.context()->selectNeuron(1, 200);
    settle(w);
    auto* text = w.findChild<QTextBrowser*>("neuronInspectorText");
    QVERIFY(text);
    QVERIFY(text->toPlainText().contains("neuron 200"));
    // Lay the document out at the dock's width and look at every line break.
    QTextDocument* doc = text->document();
    doc->setTextWidth(text->viewport()->width());
    doc->documentLayout()->documentSize();
    int breaks = 0;
    for (QTextBlock b = doc->begin(); b.isValid(); b = b.next()) {
      QTextLayout* lay = b.layout();
      const QString s = b.text();
      for (int l = 1; lay && l < lay->lineCount(); ++l) {
        const int at = lay->lineAt(l).textStart();
        ++breaks;
        auto digitish = [](QChar c) { return c.isDigit() || c == '.' || c == ',' || c == '%'; };
        QVERIFY2(!(at > 0 && at < s.size() && digitish(s[at - 1]) && digitish(s[at])),
                 qPrintable(QString("a number is broken across lines: '%1|%2'").arg(s.left(at), s.mid(at))));
      }
    }
    qInfo() << "inspector line breaks checked" << breaks << "at width" << text->viewport()->width();
  }

  // Defect 9: record progress counts against the tokens the corpus has (the
  // budget here is far larger than the corpus), and the default sample count
  // keeps the bundled demo's recording small.
  void recordProgressReachesTheEndOfASmallCorpus() {
    if (!findStep("record")) QSKIP("the recorder is not in this build");
    QTemporaryDir tmp;
    const QString ws = privateWorkspace(tmp);
    QVERIFY(!ws.isEmpty());
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    PipelineJob job;
    QString err;
    QVERIFY2(makeStepJob("record", w.context(),
                         {{"out", "rec-progress"}, {"seq-len", 64}, {"samples", 256}, {"tokens", 200000}}, &job, &err),
             qPrintable(err));
    QSignalSpy progress(w.context()->jobs(), &JobRunner::progress);
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    QVERIFY(w.context()->jobs()->start(job.name, job.fn));
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 80000);
    QVERIFY2(fin.at(0).at(1).toBool(), qPrintable(fin.at(0).at(3).toString()));
    double last = -1;
    int reports = 0;
    for (const auto& args : progress)
      if (args.at(0).toString() == "record") last = args.at(1).toDouble(), ++reports;
    auto rec = w.context()->recording(job.output);
    QVERIFY(rec);
    qInfo() << "recorded" << rec->tokens << "of a 200000-token budget; last 'record' progress" << last << "of"
            << reports << "reports";
    QVERIFY(rec->tokens < 200000);  // the corpus ends first
    QVERIFY2(last >= 0.99, qPrintable(QString("record progress ended at %1").arg(last)));

    // The dialog's default sample count on the bundled demo model (d_model,
    // d_ff, layers from its config): the samples file must stay well under
    // the 672 MB that 65536 samples wrote.
    const PipelineStep* step = findStep("record");
    const qint64 samples = withDefaults(*step, w.context(), {}).value("samples").toLongLong();
    QFile cfgFile(test::sourceRoot() + "/data/models/brown-relu/config.json");
    if (!cfgFile.open(QIODevice::ReadOnly)) QSKIP("no bundled demo model config");
    const auto cfg = nlohmann::json::parse(cfgFile.readAll().toStdString());
    auto number = [&](const char* gpt2, const char* hf) -> qint64 {
      for (const char* key : {gpt2, hf})
        if (cfg.contains(key) && cfg[key].is_number()) return cfg[key].get<qint64>();
      return 0;
    };
    const qint64 dModel = number("n_embd", "hidden_size");
    const qint64 dFF = number("n_inner", "intermediate_size") > 0 ? number("n_inner", "intermediate_size") : 4 * dModel;
    const qint64 layers = number("n_layer", "num_hidden_layers");
    const double mb = double(samples) * double(layers) * double(dModel + dFF) * 2 / 1e6;
    qInfo() << "default samples" << samples << "-> demo samples file about" << mb << "MB";
    QVERIFY(layers > 0 && dModel > 0);
    QVERIFY(mb < 150);
  }

  // Defect 9: evaluation's speed stage reports progress (it sat at 0 % for
  // seconds); and the figures' data: oracle results carry no speed, the
  // others their run counts.
  void evalSpeedStageShowsProgress() {
    if (!findStep("eval")) QSKIP("the evaluator is not in this build");
    QTemporaryDir tmp;
    const QString ws = privateWorkspace(
        tmp, {"partitions/coact-E16-s0", "routers/oracle-coact", "routers/similarity-coact", "recordings/rec-brown"});
    QVERIFY(!ws.isEmpty());
    // The fake workspace's artefacts carry a placeholder model fingerprint,
    // which eval refuses (identity keys, issue 12): stamp the model's real one.
    const test::RunResult inspect = test::runCli({"inspect", ws_ + "/model", "--fingerprint", "--json"});
    QVERIFY2(inspect.exitCode == 0, inspect.err.c_str());
    const std::string fingerprint = nlohmann::json::parse(inspect.out).at("fingerprint").get<std::string>();
    auto patch = [&](const QString& file, const std::function<void(nlohmann::json&)>& edit) {
      QFile f(file);
      if (!f.open(QIODevice::ReadOnly)) return false;
      auto j = nlohmann::json::parse(f.readAll().toStdString());
      f.close();
      edit(j);
      if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) return false;
      return f.write(QByteArray::fromStdString(j.dump(2))) > 0;
    };
    QVERIFY(patch(ws + "/partitions/coact-E16-s0/partition.json",
                  [&](nlohmann::json& j) { j["model_fingerprint"] = fingerprint; }));
    // The routers point at the shared partition; point them at the copy.
    for (const char* r : {"oracle-coact", "similarity-coact"})
      QVERIFY(patch(ws + "/routers/" + r + "/router.json", [&](nlohmann::json& j) {
        j["model_fingerprint"] = fingerprint;
        j["partition"]["path"] = (ws + "/partitions/coact-E16-s0").toStdString();
      }));
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws));
    PipelineJob job;
    QString err;
    QVERIFY2(makeStepJob("eval", w.context(),
                         {{"partition", ws + "/partitions/coact-E16-s0"},
                          {"router", ws + "/routers/similarity-coact"},
                          {"all-routers", true},
                          {"out", "eval-speed"},
                          {"sweep", "0.5,1"},
                          {"seq-len", 32},
                          {"tokens", 256},
                          {"split", "all"},
                          {"speed", true},
                          {"speed-seconds", 0.05}},
                         &job, &err),
             qPrintable(err));
    QSignalSpy progress(w.context()->jobs(), &JobRunner::progress);
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    QVERIFY(w.context()->jobs()->start(job.name, job.fn));
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 120000);
    QVERIFY2(fin.at(0).at(1).toBool(), qPrintable(fin.at(0).at(3).toString()));
    double most = -1;
    for (const auto& args : progress)
      if (args.at(0).toString() == "eval: speed") most = std::max(most, args.at(1).toDouble());
    qInfo() << "eval speed stage: highest progress" << most;
    QVERIFY2(most >= 0.99, qPrintable(QString("speed stage progress reached only %1").arg(most)));
    QFile f(job.output + "/eval.json");
    QVERIFY(f.open(QIODevice::ReadOnly));
    const auto doc = nlohmann::json::parse(f.readAll().toStdString());
    int timed = 0, oracle = 0;
    for (const auto& r : doc["results"]) {
      if (r["router"] == "oracle") {
        ++oracle;
        QVERIFY(!r.contains("speed"));
      } else {
        ++timed;
        QVERIFY(r["speed"]["forward_runs"].get<int>() >= 3);
        QVERIFY(r["speed"]["forward_speedup_min"].get<double>() <= r["speed"]["forward_speedup_max"].get<double>());
      }
    }
    QVERIFY(timed > 0 && oracle > 0);
  }
};

QTEST_MAIN(TestFigures)
#include "test_figures.moc"
