// Issue 20 of the studio: the normalised co-activation heatmap (Jaccard, PPMI
// from the splitter's weight definition) with expert labels on its axes, the
// layout defects seen at 1366x768 (Partitions table, Router usage label,
// Experts panels), and the Start page's "Copy Python" snippets, run on the
// synthetic workspace (scripts/gui/make_fake_workspace.py).
#include "views/qcp.h"

#include <QApplication>
#include <QCheckBox>
#include <QClipboard>
#include <QComboBox>
#include <QFileInfo>
#include <QFontMetrics>
#include <QProcess>
#include <QPushButton>
#include <QScrollBar>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/io/safetensors.h"
#include "gui_fixture.h"
#include "studio_test_helpers.h"
#include "views/mainwindow.h"
#include "views/view_start.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;

namespace {

void settle() {
  for (int i = 0; i < 3; ++i) QApplication::processEvents();
}

// Picks the artefact folder named `name` in `view`'s picker of `kind`.
bool pick(QWidget* view, const QString& kind, const QString& name) {
  auto* box = view->findChild<QComboBox*>(kind + "Picker");
  if (!box) return false;
  for (int i = 0; i < box->count(); ++i)
    if (QFileInfo(box->itemData(i).toString()).fileName() == name) {
      box->setCurrentIndex(i);
      settle();
      return true;
    }
  return false;
}

// The plot of `root` whose title (layout row 0) reads `title`.
QCustomPlot* plotTitled(QWidget* root, const QString& title) {
  for (QCustomPlot* p : root->findChildren<QCustomPlot*>()) {
    auto* t =
        p->plotLayout()->elementCount() > 0 ? qobject_cast<QCPTextElement*>(p->plotLayout()->element(0, 0)) : nullptr;
    if (t && t->text() == title) return p;
  }
  return nullptr;
}

// The Jaccard and PPMI of a pair, written out here from their definitions
// (docs/recording-and-splitting.md), independently of analysis/split/coact_weight.h.
double jaccardOf(double cij, double ci, double cj) { return ci + cj - cij > 0 && cij > 0 ? cij / (ci + cj - cij) : 0; }
double ppmiOf(double cij, double ci, double cj, double T) {
  return cij > 0 && ci > 0 && cj > 0 ? std::max(0.0, std::log(cij * T / (ci * cj))) : 0;
}

}  // namespace

class TestCoactLayout : public QObject {
  Q_OBJECT
  QString ws_;

 private Q_SLOTS:
  void initTestCase() {
    QString err;
    ws_ = test::studioTestWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  // Jaccard and PPMI cells at one neuron per cell equal the values computed
  // here from the raw counts; the colour range is the 1st percentile to the
  // maximum of the off-diagonal values; the caption names the measure and
  // the range; hover gives count, Jaccard and PPMI; files name the measure.
  // Jaccard runs on the GUI thread (d_ff 256), PPMI on the worker path.
  void normalisedMeasuresEqualTheirDefinitions() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* cv = test::studioView<CoactView>(w);
    QVERIFY(cv);
    w.tabs()->setCurrentWidget(cv);
    settle();
    QVERIFY(pick(cv, "partition", "coact-E16-s0"));
    cv->layerCombo()->setCurrentIndex(0);
    settle();
    QCOMPARE(cv->layer(), 0);

    auto coactFile = SafetensorsFile::open((ws_ + "/recordings/rec-brown/coact.safetensors").toStdString());
    auto labelFile = SafetensorsFile::open((ws_ + "/partitions/coact-E16-s0/labels.safetensors").toStdString());
    // [256, 256]: make_fake_workspace.py writes format version 1 (the full matrix)
    const at::Tensor C = coactFile->raw("blk.0.coact").to(at::kDouble).contiguous();
    const at::Tensor perm = labelFile->raw("blk.0.perm").contiguous();      // [256]
    const at::Tensor labels = labelFile->raw("blk.0.labels").contiguous();  // [256]
    std::ifstream mf((ws_ + "/recordings/rec-brown/manifest.json").toStdString());
    const double T = nlohmann::json::parse(mf).at("tokens").get<double>();
    const int F = static_cast<int>(C.size(0));
    const double* c = C.data_ptr<double>();
    const int32_t* P = perm.data_ptr<int32_t>();
    auto value = [&](CoactMeasure m, int r, int k) {
      const double cij = c[r * F + k], ci = c[r * F + r], cj = c[k * F + k];
      return m == CoactMeasure::Jaccard ? jaccardOf(cij, ci, cj) : ppmiOf(cij, ci, cj, T);
    };

    for (const char* name : {"jaccard", "ppmi"}) {
      const CoactMeasure m = std::string(name) == "jaccard" ? CoactMeasure::Jaccard : CoactMeasure::Ppmi;
      if (m == CoactMeasure::Ppmi) cv->setSyncWidthLimit(0);  // the worker thread's path
      const int idx = cv->measureCombo()->findData(QString(name));
      QVERIFY(idx >= 0);
      cv->measureCombo()->setCurrentIndex(idx);
      if (m == CoactMeasure::Ppmi) QVERIFY(cv->computing());  // started on the worker, the map waits for it
      QTRY_VERIFY_WITH_TIMEOUT(!cv->computing(), 20000);
      settle();
      QVERIFY(cv->measure() == m);
      QVERIFY(cv->hasData());

      // Full zoom: 40 x 40 neurons, one per cell.
      cv->plot()->xAxis->setRange(0, 40);
      cv->plot()->yAxis->setRange(0, 40);
      cv->rebuildVisible();
      QCOMPARE(cv->gridCells(), 40 * 40);
      double maxDiff = 0;
      for (int row = 0; row < 40; ++row)
        for (int col = 0; col < 40; ++col) {
          const double shown = cv->gridValue(col, row);
          if (row == col) {
            QVERIFY(std::isnan(shown));
            continue;
          }
          maxDiff = std::max(maxDiff, std::abs(shown - value(m, P[row], P[col])));
        }
      qInfo() << name << "max |cell - recomputed| over 40 x 40 cells" << maxDiff;
      QVERIFY(maxDiff < 1e-5);  // the matrix is stored as float

      // The colour range over every off-diagonal pair (d_ff^2 < 2^18: no sampling).
      std::vector<double> off;
      for (int r = 0; r < F; ++r)
        for (int k = 0; k < F; ++k)
          if (r != k) off.push_back(value(m, r, k));
      std::sort(off.begin(), off.end());
      const double lo = off[off.size() / 100], hi = off.back();
      qInfo() << name << "colour range" << cv->colourMin() << cv->colourMax() << "recomputed" << lo << hi;
      QVERIFY(std::abs(cv->colourMax() - hi) < 1e-5 * std::max(1.0, hi));
      QVERIFY(std::abs(cv->colourMin() - lo) < 1e-5 * std::max(1.0, hi));
      QVERIFY(hi > lo);
      const QString caption = cv->caption();
      QVERIFY2(caption.startsWith(m == CoactMeasure::Jaccard ? "Jaccard" : "PPMI"), qPrintable(caption));
      QVERIFY2(caption.contains(QString::number(cv->colourMin(), 'g', 4)) &&
                   caption.contains(QString::number(cv->colourMax(), 'g', 4)),
               qPrintable(caption));

      // Hover: the pair's count, Jaccard and PPMI, and both experts.
      const int r = P[200], k = P[10];
      const QString hover = cv->hoverText(10.5, 200.5);
      qInfo() << hover;
      const double cij = c[r * F + k], ci = c[r * F + r], cj = c[k * F + k];
      QVERIFY2(hover.contains(QString("co-active on %L1 tokens").arg(qlonglong(cij))), qPrintable(hover));
      QVERIFY2(hover.contains(QString("Jaccard %1").arg(jaccardOf(cij, ci, cj), 0, 'f', 4)), qPrintable(hover));
      QVERIFY2(hover.contains(QString("PPMI %1").arg(ppmiOf(cij, ci, cj, T), 0, 'f', 3)), qPrintable(hover));
      QVERIFY2(hover.contains(QString("experts E%1 / E%2").arg(labels[r].item<int>()).arg(labels[k].item<int>())),
               qPrintable(hover));
      QVERIFY(cv->hoverText(5.5, 5.5).contains("fires on"));
      QVERIFY(cv->hoverText(-1, 3).isEmpty());

      // Exports name the measure.
      QCOMPARE(cv->figureBaseName(), QString("co-activation-%1-L0").arg(name));
      QCOMPARE(cv->csvData().section('\n', 0, 0).section(',', -1), QString("mean_%1").arg(name));
    }
    // Back to counts: the file names and CSV as before.
    cv->measureCombo()->setCurrentIndex(cv->measureCombo()->findData("counts"));
    settle();
    QCOMPARE(cv->figureBaseName(), QString("co-activation-L0"));
    QVERIFY(cv->csvData().startsWith(
        "display_row_start,display_row_end,display_col_start,display_col_end,mean_coactive_tokens"));
  }

  // Expert labels sit at each block's centre on both axes, and neighbouring
  // labels never overlap (every n-th expert when the blocks are narrow).
  void expertTickLabelsAtBlockCentres() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* cv = test::studioView<CoactView>(w);
    QVERIFY(cv);
    w.tabs()->setCurrentWidget(cv);
    settle();
    QVERIFY(pick(cv, "partition", "coact-E16-s0"));
    cv->layerCombo()->setCurrentIndex(0);
    settle();
    auto labelFile = SafetensorsFile::open((ws_ + "/partitions/coact-E16-s0/labels.safetensors").toStdString());
    const at::Tensor labels = labelFile->raw("blk.0.labels").contiguous();
    std::vector<int> sizes(16, 0);
    for (int i = 0; i < labels.size(0); ++i) ++sizes.at(labels[i].item<int>());
    std::vector<double> centre(16);
    for (int e = 0, start = 0; e < 16; start += sizes[e], ++e) centre[e] = start + sizes[e] / 2.0;

    QCustomPlot* plot = cv->plot();
    for (QRect zoom : {QRect(0, 0, 256, 256), QRect(0, 0, 64, 64)}) {
      plot->xAxis->setRange(zoom.left(), zoom.left() + zoom.width());
      plot->yAxis->setRange(zoom.top(), zoom.top() + zoom.height());
      plot->replot(QCustomPlot::rpImmediateRefresh);
      cv->rebuildVisible();
      for (QCPAxis* axis : {plot->xAxis, plot->yAxis}) {
        auto ticker = axis->ticker().dynamicCast<QCPAxisTickerText>();
        QVERIFY2(ticker, "no expert tick labels");
        const QMap<double, QString> ticks = ticker->ticks();
        QVERIFY(ticks.size() >= 2);
        const QFontMetrics fm(axis->tickLabelFont());
        const bool horizontal = axis == plot->xAxis;
        double lastPx = 0, lastHalf = 0, minGap = 1e9;
        bool first = true;
        int visible = 0;
        for (auto it = ticks.begin(); it != ticks.end(); ++it) {
          QVERIFY2(it.value().startsWith("E"), qPrintable(it.value()));
          const int e = it.value().mid(1).toInt();
          QVERIFY(e >= 0 && e < 16);
          QCOMPARE(it.key(), centre[e]);
          if (!axis->range().contains(it.key())) continue;
          ++visible;
          const double px = axis->coordToPixel(it.key());
          const double half = (horizontal ? fm.horizontalAdvance(it.value()) : fm.height()) / 2.0;
          if (!first) {
            const double gap = std::abs(px - lastPx) - lastHalf - half;
            minGap = std::min(minGap, gap);
            QVERIFY2(gap > 0, qPrintable(QString("labels overlap near %1").arg(it.value())));
          }
          first = false;
          lastPx = px;
          lastHalf = half;
        }
        qInfo() << (horizontal ? "x" : "y") << "zoom" << zoom.width() << "labels shown" << visible << "of"
                << ticks.size() << "narrowest gap (px)" << minGap << "axis px"
                << (horizontal ? plot->axisRect()->width() : plot->axisRect()->height());
        QVERIFY(visible >= 2);
        // Zoomed to four experts, every one of them is labelled.
        if (zoom.width() == 64) QVERIFY(visible >= 4);
      }
    }
    // Hover names the experts.
    QVERIFY(cv->hoverText(3.5, 20.5).contains("experts E"));
    // Without a partition: neuron numbers again.
    QCheckBox* reorder = nullptr;
    for (QCheckBox* b : cv->findChildren<QCheckBox*>())
      if (b->text().startsWith("Reorder")) reorder = b;
    QVERIFY(reorder);
    reorder->setChecked(false);
    settle();
    QVERIFY(!plot->xAxis->ticker().dynamicCast<QCPAxisTickerText>());
  }

  // Partitions: the metrics table fits a 1366x768 window (no horizontal
  // scrollbar); its CSV keeps the full column names.
  void partitionTableFitsWithoutHorizontalScrollbar() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* pv = test::studioView<PartitionView>(w);
    QVERIFY(pv);
    w.tabs()->setCurrentWidget(pv);
    settle();
    QVERIFY(w.width() <= 1366 && w.height() <= 768);
    auto* table = pv->findChild<QTableWidget*>();
    QVERIFY(table && table->rowCount() >= 4);
    int total = 0;
    for (int c = 0; c < table->columnCount(); ++c) total += table->columnWidth(c);
    qInfo() << "window" << w.size() << "table viewport" << table->viewport()->width() << "columns total" << total
            << "columns" << table->columnCount();
    QVERIFY2(!table->horizontalScrollBar()->isVisible(), "the Partitions table scrolls horizontally at 1366x768");
    QVERIFY(total <= table->viewport()->width());
    // Short headers with their full names in the tooltip and the CSV.
    QStringList full;
    for (int c = 0; c < table->columnCount(); ++c) {
      QVERIFY(!table->horizontalHeaderItem(c)->toolTip().isEmpty());
      full << table->horizontalHeaderItem(c)->data(Qt::UserRole).toString();
    }
    QVERIFY(full.contains("recall@k/2"));
    // The fixture's partitions carry no stability metric, so that column is absent.
    QCOMPARE(full.contains("stability (ARI)"), table->columnCount() == 11);
    QVERIFY(pv->csvData().startsWith("partition,method,seed,experts,coact inside,edge cut,balance,recall@1,"));
  }

  // Router: the Expert usage plot's y label lies along its axis, inside the widget.
  void routerUsageYLabelInsideItsPlot() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* rv = test::studioView<RouterView>(w);
    QVERIFY(rv);
    w.tabs()->setCurrentWidget(rv);
    settle();
    QVERIFY(rv->hasData());
    QCustomPlot* usage = plotTitled(rv, "Expert usage");
    QVERIFY(usage);
    usage->replot(QCustomPlot::rpImmediateRefresh);
    settle();
    usage->replot(QCustomPlot::rpImmediateRefresh);
    const QString label = usage->yAxis->label();
    const QFontMetrics fm(usage->yAxis->labelFont());
    int longest = 0;
    const QStringList lines = label.split('\n');
    for (const QString& l : lines) longest = std::max(longest, fm.horizontalAdvance(l));
    const QRect axis = usage->axisRect()->rect();
    // The label is drawn rotated, centred on the axis rect's height.
    const QRect labelRect(axis.left() - int(lines.size()) * fm.height(), axis.center().y() - longest / 2,
                          int(lines.size()) * fm.height(), longest);
    qInfo() << "usage y label" << label << "rect" << labelRect << "axis rect" << axis << "plot" << usage->rect();
    QVERIFY2(!label.isEmpty(), "no y label");
    QVERIFY2(longest <= axis.height(),
             qPrintable(QString("y label %1 px along a %2 px axis").arg(longest).arg(axis.height())));
    QVERIFY2(usage->rect().contains(labelRect), "the y label runs past the plot widget");
  }

  // Experts: the selected expert's row outline stays on the heatmap (not on
  // the colour scale); the usage panel's log-axis labels keep apart; the
  // PCA labels lie inside the plot.
  void expertsOutlineTicksAndLabelsInside() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* ev = test::studioView<ExpertsView>(w);
    QVERIFY(ev);
    w.tabs()->setCurrentWidget(ev);
    settle();
    QVERIFY(ev->errorText().isEmpty());
    w.context()->selectExpert(ev->layer(), 2);
    settle();
    for (QCustomPlot* p : ev->figureRoot()->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
    QCustomPlot* sim = ev->plot(ExpertsView::Similarity);
    int outlines = 0;
    for (int i = 0; i < sim->itemCount(); ++i) {
      auto* r = qobject_cast<QCPItemRect*>(sim->item(i));
      if (!r || !r->property("selectedExpert").isValid()) continue;
      ++outlines;
      const QRect axis = sim->axisRect()->rect();
      const double right = r->bottomRight->pixelPosition().x(), left = r->topLeft->pixelPosition().x();
      // Pen 2 px: its outer edge (1 px beyond the line) stays inside the axis rect.
      QVERIFY2(
          right + 1 <= axis.right() + 0.5 && left - 1 >= axis.left() - 0.5,
          qPrintable(
              QString("outline %1..%2 px, axis rect %3..%4").arg(left).arg(right).arg(axis.left()).arg(axis.right())));
    }
    QCOMPARE(outlines, 2);
    // Usage: log ticks at least a label's height apart.
    QCustomPlot* usage = ev->plot(ExpertsView::Usage);
    auto ticker = usage->yAxis->ticker().dynamicCast<QCPAxisTickerText>();
    QVERIFY(ticker);
    const int h = QFontMetrics(usage->yAxis->tickLabelFont()).height();
    double last = -1e9, minGap = 1e9;
    int shown = 0;
    for (auto it = ticker->ticks().begin(); it != ticker->ticks().end(); ++it) {
      if (!usage->yAxis->range().contains(it.key())) continue;
      const double px = usage->yAxis->coordToPixel(it.key());
      if (shown++) minGap = std::min(minGap, std::abs(px - last));
      last = px;
    }
    qInfo() << "usage log ticks shown" << shown << "closest pair (px)" << minGap << "label height" << h;
    QVERIFY(shown >= 2);
    QVERIFY(minGap >= h);
    // PCA: each expert label's box (by its alignment) inside the axis rect.
    QCustomPlot* pca = ev->plot(ExpertsView::Pca);
    int labels = 0;
    for (int i = 0; i < pca->itemCount(); ++i) {
      auto* t = qobject_cast<QCPItemText*>(pca->item(i));
      if (!t || !t->property("pcaLabel").isValid()) continue;
      ++labels;
      const QFontMetrics fm(t->font());
      const QPointF at = t->position->pixelPosition();
      const QMargins pad = t->padding();
      const double wdt = fm.horizontalAdvance(t->text()) + pad.left() + pad.right(),
                   hgt = fm.height() + pad.top() + pad.bottom();
      const double x0 = t->positionAlignment() & Qt::AlignRight ? at.x() - wdt : at.x();
      const double y0 = t->positionAlignment() & Qt::AlignBottom ? at.y() - hgt : at.y();
      const QRectF box(x0, y0, wdt, hgt);
      QVERIFY2(QRectF(pca->axisRect()->rect()).adjusted(-1, -1, 1, 1).contains(box),
               qPrintable(QString("PCA label %1 at %2,%3 leaves the plot").arg(t->text()).arg(box.x()).arg(box.y())));
    }
    QVERIFY(labels >= 2);
  }

  // Start page: a "Copy Python" snippet per stage with an artefact, naming its
  // absolute path; each runs with /usr/bin/python3 on the synthetic workspace.
  void startPagePythonSnippetsRun() {
    MainWindow w;
    w.resize(1366, 768);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    auto* sv = qobject_cast<StartView*>(w.tabs()->widget(0));
    QVERIFY(sv);
    w.tabs()->setCurrentWidget(sv);
    settle();
    QVERIFY(!sv->table()->horizontalScrollBar()->isVisible());
    QProcess probe;
    probe.start("/usr/bin/python3", {"-c", "import numpy"});
    const bool numpy =
        probe.waitForFinished(30000) && probe.exitStatus() == QProcess::NormalExit && probe.exitCode() == 0;
    QTemporaryDir tmp;
    int ran = 0;
    for (int row = 0; row < static_cast<int>(sv->stages().size()); ++row) {
      const PipelineStage& s = sv->stages()[row];
      QPushButton* b = sv->pythonButton(row);
      QVERIFY(b);
      QCOMPARE(b->text(), QString("Copy Python"));
      if (s.newest.isEmpty() || (!s.present && (s.id == "model" || s.id == "corpus"))) {
        QVERIFY2(!b->isEnabled() && s.python.isEmpty(), qPrintable(s.id));
        continue;
      }
      QVERIFY2(b->isEnabled() && !s.python.isEmpty(), qPrintable(s.id));
      const QString abs = QFileInfo(s.newest).absoluteFilePath();
      QVERIFY2(s.python.contains("ARTEFACT = \"" + abs + "\""), qPrintable(s.id + ": " + s.python.left(200)));
      // The button copies it.
      QGuiApplication::clipboard()->clear();
      sv->table()->scrollToItem(sv->table()->item(row, 0));
      settle();
      QTest::mouseClick(b, Qt::LeftButton);
      QCOMPARE(QGuiApplication::clipboard()->text(), s.python);
      if (!numpy) continue;
      const QString file = tmp.filePath(s.id + ".py");
      QFile f(file);
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write(s.python.toUtf8());
      f.close();
      QProcess py;
      py.start("/usr/bin/python3", {file});
      QVERIFY(py.waitForFinished(60000));
      const QString out = QString::fromUtf8(py.readAllStandardOutput()),
                    err = QString::fromUtf8(py.readAllStandardError());
      qInfo().noquote() << s.id << "exit" << py.exitCode() << "|" << out.left(160).replace('\n', " / ");
      QVERIFY2(py.exitStatus() == QProcess::NormalExit && py.exitCode() == 0, qPrintable(s.id + ": " + err));
      QVERIFY2(!out.trimmed().isEmpty(), qPrintable(s.id));
      ++ran;
    }
    if (!numpy) QSKIP("/usr/bin/python3 has no numpy: the snippets' paths were checked, not run");
    // model, corpus, recording, partition, router, evaluation, front, analysis (no export in the fixture).
    QVERIFY2(ran >= 8, qPrintable(QString("%1 snippets ran").arg(ran)));
  }
};

QTEST_MAIN(TestCoactLayout)
#include "test_coact_layout.moc"
