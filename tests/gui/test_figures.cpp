// GUI tests of the figures a researcher exports and the window they work in
// (issue 20): PNG export at print resolutions keeps the on-screen layout, the
// recall plot's axis and colours, speed figures with spread, the layout on a
// 1366x768 screen, and progress that reaches its end.
#include "views/qcp.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QComboBox>
#include <QDockWidget>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTextBlock>
#include <QTextBrowser>
#include <QTextLayout>
#include <QtTest>
#include <climits>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

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

}  // namespace

class TestFigures : public QObject {
  Q_OBJECT
  QString ws_;

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
    const QStringList tabs{"Co-activation", "Sparsity", "Router", "Evaluation", "Partitions"};
    for (int i = 0; i < w.tabs()->count(); ++i) {
      if (!tabs.contains(w.tabs()->tabText(i))) continue;
      w.tabs()->setCurrentIndex(i);
      settle(w);
      FigureView* f = w.figureView(i);
      QVERIFY(f && f->hasData());
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
    const test::RunResult inspect = test::runCli({"inspect", ws_ + "/model", "--json"});
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
