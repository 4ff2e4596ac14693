#include "views/qcp.h"

#include <QGridLayout>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/record/sparsity.h"
#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

namespace {
QCustomPlot* newPlot(QWidget* parent, const QString& title) {
  auto* p = new QCustomPlot(parent);
  p->plotLayout()->insertRow(0);
  auto* t = new QCPTextElement(p, title, figureFont(11));
  t->setFont(QFont(figureFont(11).family(), 11, QFont::Bold));
  p->plotLayout()->addElement(0, 0, t);
  p->setMinimumSize(240, 150);
  return p;
}
/// Quantile of the active-neurons-per-token histogram.
}  // namespace

SparsityView::SparsityView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Sparsity", PickRecording | PickLayer, parent) {
  auto* g = new QGridLayout(body());
  g->setContentsMargins(6, 6, 6, 6);
  layers_ = newPlot(body(), "Active neurons per layer");
  hist_ = newPlot(body(), "Active neurons per token");
  freq_ = newPlot(body(), "Per-neuron firing frequency");
  note_ = new QLabel(body());
  note_->setStyleSheet("color:#333;");
  note_->setWordWrap(true);  // a long note must not set the window's minimum width (1366x768 screens)
  g->addWidget(layers_, 0, 0);
  g->addWidget(hist_, 0, 1);
  g->addWidget(freq_, 1, 0, 1, 2);
  g->addWidget(note_, 2, 0, 1, 2);
  g->setRowStretch(0, 1);
  g->setRowStretch(1, 1);
  for (QCustomPlot* p : {layers_, hist_, freq_}) applyPublicationStyle(p);
  freq_->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  freq_->axisRect()->setRangeZoom(Qt::Horizontal);
  freq_->axisRect()->setRangeDrag(Qt::Horizontal);
  // Clicking a neuron in the frequency plot selects it everywhere.
  connect(freq_, &QCustomPlot::mousePress, this, [this](QMouseEvent* ev) {
    if (!rec_ || order_.empty()) return;
    double x = freq_->xAxis->pixelToCoord(ev->position().x());
    int rank = static_cast<int>(std::lround(x));
    if (rank >= 0 && rank < static_cast<int>(order_.size())) this->ctx()->selectNeuron(layer(), order_[rank]);
  });
  connect(ctx, &StudioContext::neuronSelected, this, [this](int, int) { refresh(); });
  refresh();
}

void SparsityView::refresh() {
  rec_ = ctx()->hasWorkspace() ? ctx()->recording(picked("recording")) : nullptr;
  if (!rec_) {
    setLayers({});
    setEmptyState(ctx()->hasWorkspace() ? "No recording yet.\n\nRun Pipeline > Record activations... to record activation statistics "
                                          "of the workspace model over its corpus."
                                        : "No workspace open.");
    return;
  }
  setLayers(rec_->layers, rec_->sites);
  setEmptyState("");
  // Single-stack recordings are drawn as they always were ("layer 3"); others
  // (T5 stacks, the expert sites of a native MoE model) name their sites.
  const bool singleStack = std::all_of(rec_->sites.begin(), rec_->sites.end(), [](const Site& s) {
    return s.stack == SiteStack::Single && s.expert < 0 && !s.shared;
  });

  // 1. Per-layer mean active share with the 10-90% spread over tokens.
  layers_->clearPlottables();
  QVector<double> xs, mean, lo, hi;
  for (int L : rec_->layers) {
    const LayerSparsity& sp = rec_->sparsity.at(L);  // the core's summary (analysis/record/sparsity.h)
    const double m = sp.meanActiveShare;
    xs << L;
    mean << m;
    lo << m - sp.q10ActiveShare;
    hi << sp.q90ActiveShare - m;
  }
  auto* g = layers_->addGraph();
  g->setData(xs, mean);
  g->setPen(QPen(seriesColor(0), 2));
  g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, seriesColor(0), Qt::white, 7));
  g->setName("mean");
  auto* eb = new QCPErrorBars(layers_->xAxis, layers_->yAxis);
  eb->setDataPlottable(g);
  QVector<double> loC, hiC;
  for (int i = 0; i < lo.size(); ++i) {
    loC << std::max(0.0, lo[i]);
    hiC << std::max(0.0, hi[i]);
  }
  eb->setData(loC, hiC);
  eb->setPen(QPen(seriesColor(0).darker(120), 1));
  eb->setName("10-90% of tokens");
  layers_->yAxis->setLabel(singleStack ? "share of d_ff active" : "share active");
  if (singleStack) {
    layers_->xAxis->setLabel("layer");
    QSharedPointer<QCPAxisTickerFixed> tick(new QCPAxisTickerFixed);
    tick->setTickStep(1.0);
    tick->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
    layers_->xAxis->setTicker(tick);
  } else {
    // Named sites: the x positions are site indices, labelled by site name.
    layers_->xAxis->setLabel("FFN site");
    QSharedPointer<QCPAxisTickerText> tick(new QCPAxisTickerText);
    for (int L : rec_->layers) tick->addTick(L, rec_->siteText(L));
    layers_->xAxis->setTicker(tick);
  }
  // Many or long site names (a native MoE model's blk.1.exp.2, ...) would
  // overlap side by side: they are drawn slanted then.
  layers_->xAxis->setTickLabelRotation(!singleStack && rec_->layers.size() > 4 ? -40 : 0);
  layers_->xAxis->setRange(xs.front() - 0.5, xs.back() + 0.5);
  double ymax = 0;
  for (int i = 0; i < mean.size(); ++i) ymax = std::max(ymax, mean[i] + hiC[i]);
  layers_->yAxis->setRange(0, std::max(0.05, ymax * 1.45));  // headroom for the legend
  layers_->legend->setVisible(true);
  layers_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
  layers_->replot();

  // 2. Distribution of active neurons per token: one line per layer, the picked one bold.
  const int cur = layer();
  hist_->clearPlottables();
  int n = 0;
  double hmax = 0;
  double xmaxUsed = 0.0;  // the largest share of a site's width any token used
  for (int L : rec_->layers) {
    const auto& h = rec_->stats.at(L).activeHist;
    double tot = std::accumulate(h.begin(), h.end(), 0.0);
    if (tot <= 0) continue;
    const int F = rec_->widthOf(L);  // d_ff; an expert site's d_expert
    // Bin to at most 64 bins so the curves stay readable for wide FFNs.
    int bin = std::max(1, F / 64);
    QVector<double> x, y;
    for (int b = 0; b <= F; b += bin) {
      double c = 0;
      for (int i = b; i < std::min(F + 1, b + bin); ++i) c += h[i];
      x << (b + (bin - 1) / 2.0) / F;
      y << c / tot;
      if (c > 0) xmaxUsed = std::max(xmaxUsed, std::min(F, b + bin) / double(F));
      hmax = std::max(hmax, c / tot);
    }
    auto* gr = hist_->addGraph();
    gr->setData(x, y);
    // Viridis up to 0.85: its last yellows are too light for thin lines on white.
    QColor col = mapColor(ColorMap::Viridis, rec_->layers.size() > 1 ? 0.85 * n / (rec_->layers.size() - 1) : 0.0);
    gr->setPen(QPen(col, L == cur ? 3 : 1.2));
    gr->setName(rec_->siteText(L));
    // Many sites: only the picked (bold) one is named, so the legend fits the plot.
    if (rec_->layers.size() > 6 && L != cur) gr->removeFromLegend();
    ++n;
  }
  hist_->xAxis->setLabel(singleStack ? "active neurons per token (share of d_ff)"
                                     : "active neurons per token (share of the site's width)");
  hist_->yAxis->setLabel("share of tokens");
  hist_->xAxis->setRange(0, std::min(1.0, std::max(xmaxUsed, 0.01) * 1.05));
  // The legend goes where the picked site's curve is not: top-left when most
  // of its tokens sit in the right half of the range.
  double massRight = 0, massAll = 0;
  if (cur >= 0 && rec_->stats.count(cur)) {
    const auto& h = rec_->stats.at(cur).activeHist;
    const double F = rec_->widthOf(cur), half = 0.5 * hist_->xAxis->range().upper;
    for (size_t b = 0; b < h.size(); ++b) (b / F > half ? massRight : massAll) += double(h[b]);
    massAll += massRight;
  }
  hist_->axisRect()->insetLayout()->setInsetAlignment(
      0, Qt::AlignTop | (massAll > 0 && massRight > 0.5 * massAll ? Qt::AlignLeft : Qt::AlignRight));
  hist_->yAxis->setRange(0, hmax * 1.25 + 1e-9);
  hist_->legend->setVisible(true);
  hist_->replot();

  // 3. Per-neuron firing frequency of the picked layer, sorted, dead and always-on marked.
  freq_->clearPlottables();
  freq_->clearItems();
  if (cur >= 0 && rec_->stats.count(cur)) {
    const auto& s = rec_->stats.at(cur);
    const LayerSparsity& sp = rec_->sparsity.at(cur);  // dead / always-on counts from the core
    // The tokens the site's statistics count (T5: its stream's; an expert: those routed to it).
    const double T = std::max<double>(1.0, static_cast<double>(rec_->siteTokensOf(cur)));
    const int F = rec_->widthOf(cur);
    order_.resize(F);
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) { return s.count[a] > s.count[b]; });
    QVector<double> x(F), y(F), xd, yd, xa, ya;
    for (int r = 0; r < F; ++r) {
      double f = s.count[order_[r]] / T;
      x[r] = r;
      y[r] = f;
      if (s.count[order_[r]] == 0) {
        xd << r;
        yd << 0;
      } else if (f >= 0.99) {
        xa << r;
        ya << f;
      }
    }
    auto* gr = freq_->addGraph();
    gr->setData(x, y);
    gr->setPen(QPen(seriesColor(0), 1.5));
    gr->setBrush(QColor(0, 114, 178, 40));
    gr->setName("firing frequency");
    auto* gd = freq_->addGraph();
    gd->setData(xd, yd);
    gd->setLineStyle(QCPGraph::lsNone);
    gd->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCross, QPen(seriesColor(5), 1.5), QBrush(), 7));
    gd->setName(QString("dead (never active): %1").arg(sp.dead));
    auto* ga = freq_->addGraph();
    ga->setData(xa, ya);
    ga->setLineStyle(QCPGraph::lsNone);
    ga->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssTriangle, QPen(seriesColor(1).darker(130), 1.5), QBrush(), 8));
    ga->setName(QString("always on (>= 99%): %1").arg(sp.alwaysOn));
    int sel = ctx()->selectedLayer() == cur ? ctx()->selectedNeuron() : -1;
    if (sel >= 0 && sel < F) {
      int rank = static_cast<int>(std::find(order_.begin(), order_.end(), sel) - order_.begin());
      auto* line = new QCPItemStraightLine(freq_);
      line->point1->setCoords(rank, 0);
      line->point2->setCoords(rank, 1);
      line->setPen(QPen(QColor(213, 94, 0), 1.5, Qt::DashLine));
      auto* lab = new QCPItemText(freq_);
      lab->position->setCoords(rank, 1.0);
      lab->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
      lab->setText(QString(" neuron %1").arg(sel));
      lab->setFont(figureFont(9));
      lab->setColor(QColor(213, 94, 0));
    }
    freq_->xAxis->setLabel(QString("neurons of %1, sorted by frequency").arg(rec_->siteText(cur)));
    freq_->yAxis->setLabel("share of tokens active");
    freq_->xAxis->setRange(-0.5, F - 0.5);
    freq_->yAxis->setRange(0, 1.05);
    freq_->legend->setVisible(true);
    freq_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    const Site site = rec_->siteOf(cur);
    const QString width = site.expert >= 0 ? "d_expert" : site.shared ? "d_shared" : "d_ff";
    note_->setText(QString("Recording: %1 tokens%7, %8 %2. %3: %4% of neurons active per token on average; "
                           "%5 dead, %6 always on. Click the frequency plot to inspect a neuron.")
                       .arg(singleStack ? rec_->tokens : rec_->siteTokensOf(cur))
                       .arg(F)
                       .arg(rec_->siteText(cur, true))
                       .arg(sp.meanActiveShare * 100, 0, 'f', 1)
                       .arg(sp.dead)
                       .arg(sp.alwaysOn)
                       .arg(site.expert >= 0 ? QString(" routed to the expert") : QString())
                       .arg(width));
  }
  freq_->replot();
}

QString SparsityView::csvData() const {
  QString out = "layer,neuron,active_count,firing_frequency,mean_activation,max_activation\n";
  if (!rec_) return out;
  for (int L : rec_->layers) {
    const auto& s = rec_->stats.at(L);
    const double T = std::max<double>(1.0, static_cast<double>(rec_->siteTokensOf(L)));  // what the site counts
    for (int i = 0; i < rec_->widthOf(L); ++i)
      out += QString("%1,%2,%3,%4,%5,%6\n")
                 .arg(L)
                 .arg(i)
                 .arg(s.count[i])
                 .arg(s.count[i] / T, 0, 'g', 8)
                 .arg(s.mean[i], 0, 'g', 8)
                 .arg(s.max[i], 0, 'g', 8);
  }
  return out;
}

}  // namespace moefy::views
