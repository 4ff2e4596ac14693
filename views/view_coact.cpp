#include "views/qcp.h"

#include <QCheckBox>
#include <QHBoxLayout>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <limits>
#include <cmath>
#include <numeric>

#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

namespace {
constexpr int kMaxSat = 4096;  // the summed-area table is built on at most this many rows/cols
}

CoactView::CoactView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Co-activation", PickRecording | PickPartition | PickLayer, parent) {

  reorder_ = new QCheckBox("Reorder by partition", optionsBar());
  reorder_->setChecked(true);
  optionsBar()->addWidget(reorder_);
  logScale_ = new QCheckBox("Log colour", optionsBar());
  logScale_->setChecked(true);
  optionsBar()->addWidget(logScale_);
  scaleMode_ = new QComboBox(optionsBar());
  scaleMode_->addItems({"Per-layer scale", "Global scale"});
  scaleMode_->setObjectName("scaleMode");
  optionsBar()->addWidget(scaleMode_);
  optionsBar()->addWidget(new QLabel("  Colour map: ", optionsBar()));
  cmap_ = new QComboBox(optionsBar());
  cmap_->addItems({"Viridis", "Cividis", "Greys"});
  optionsBar()->addWidget(cmap_);
  for (QCheckBox* c : {reorder_, logScale_}) connect(c, &QCheckBox::toggled, this, [this] { refresh(); });
  for (QComboBox* c : {scaleMode_, cmap_}) connect(c, &QComboBox::currentIndexChanged, this, [this] { refresh(); });

  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  plot_ = new QCustomPlot(body());
  plot_->setMinimumSize(320, 260);
  lay->addWidget(plot_, 1);
  hover_ = new QLabel("Hover over the map for neuron ids and counts; wheel zooms, drag pans, double-click resets.", body());
  hover_->setObjectName("coactHover");
  hover_->setWordWrap(true);
  lay->addWidget(hover_);
  map_ = new QCPColorMap(plot_->xAxis, plot_->yAxis);
  map_->setInterpolate(false);
  map_->setTightBoundary(true);
  scale_ = new QCPColorScale(plot_);
  plot_->plotLayout()->addElement(0, 1, scale_);
  scale_->setType(QCPAxis::atRight);
  map_->setColorScale(scale_);
  auto* group = new QCPMarginGroup(plot_);
  plot_->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  scale_->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  plot_->yAxis->setRangeReversed(true);
  plot_->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  applyPublicationStyle(plot_);
  scale_->axis()->setTickLabelFont(figureFont(9));
  scale_->axis()->setLabelFont(figureFont(10));
  plot_->xAxis->grid()->setVisible(false);
  plot_->yAxis->grid()->setVisible(false);

  lodTimer_ = new QTimer(this);
  lodTimer_->setSingleShot(true);
  lodTimer_->setInterval(40);
  connect(lodTimer_, &QTimer::timeout, this, &CoactView::rebuildVisible);
  connect(plot_->xAxis, QOverload<const QCPRange&>::of(&QCPAxis::rangeChanged), this, [this] { lodTimer_->start(); });
  connect(plot_->yAxis, QOverload<const QCPRange&>::of(&QCPAxis::rangeChanged), this, [this] { lodTimer_->start(); });
  connect(plot_, &QCustomPlot::afterLayout, this, [this] {
    QSize now = plot_->axisRect()->size();
    if (now != plot_->property("lodSize").toSize()) {
      plot_->setProperty("lodSize", now);
      lodTimer_->start();
    }
  });
  connect(plot_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
    int r, c;
    long long n;
    double x = plot_->xAxis->pixelToCoord(ev->position().x()), y = plot_->yAxis->pixelToCoord(ev->position().y());
    if (!cellAt(x, y, &r, &c, &n)) return;
    QString t = r == c ? QString("neuron %1 fires on %2 tokens (the diagonal: drawn grey, outside the colour scale)").arg(r).arg(n)
                       : QString("row neuron %1, column neuron %2: co-active on %3 tokens").arg(r).arg(c).arg(n);
    if (part_ && part_->labels.count(layer()))
      t += QString(" (experts %1 / %2)").arg(part_->labels.at(layer())[r]).arg(part_->labels.at(layer())[c]);
    hover_->setText(t);
    QToolTip::showText(ev->globalPosition().toPoint(), t, plot_);
  });
  connect(plot_, &QCustomPlot::mouseDoubleClick, this, [this](QMouseEvent*) {
    plot_->xAxis->setRange(0, F_);
    plot_->yAxis->setRange(0, F_);
    plot_->replot();
  });
  connect(plot_, &QCustomPlot::mouseRelease, this, [this](QMouseEvent* ev) {
    if (ev->button() != Qt::RightButton) return;
    int r, c;
    long long n;
    if (cellAt(plot_->xAxis->pixelToCoord(ev->position().x()), plot_->yAxis->pixelToCoord(ev->position().y()), &r, &c, &n))
      this->ctx()->selectNeuron(layer(), r);
  });
  connect(ctx, &StudioContext::neuronSelected, this, [this](int, int) { highlight(); });
  connect(ctx, &StudioContext::expertSelected, this, [this](int, int) { highlight(); });
  refresh();
}

bool CoactView::cellAt(double x, double y, int* r, int* c, long long* n) const {
  if (!coact_ || F_ == 0 || x < 0 || y < 0 || x >= F_ || y >= F_) return false;
  int ci = static_cast<int>(x), ri = static_cast<int>(y);
  *r = perm_[ri];
  *c = perm_[ci];
  *n = (*coact_)[static_cast<size_t>(*r) * F_ + *c];
  return true;
}

void CoactView::refresh() {
  coact_.reset();
  F_ = 0;
  rec_ = ctx()->hasWorkspace() ? ctx()->recording(picked("recording")) : nullptr;
  if (!rec_) {
    setLayers({});
    setEmptyState(ctx()->hasWorkspace() ? "No recording yet.\n\nThe co-activation heatmap needs a recording "
                                          "(Pipeline > Record activations...)." : "No workspace open.");
    return;
  }
  setLayers(rec_->layers, rec_->sites);
  if (!rec_->hasCoact()) {
    setEmptyState("This recording has no co-activation counts (coact.safetensors).");
    return;
  }
  const int L = layer();
  try {
    coact_ = rec_->coact(L);
  } catch (const std::exception& e) {
    ctx()->report(StudioContext::Error, e.what());
    setEmptyState(QString("Cannot read the co-activation of %1:\n%2").arg(rec_->siteText(L)).arg(e.what()));
    return;
  }
  setEmptyState("");
  F_ = rec_->widthOf(L);  // d_ff; an expert site's d_expert
  part_ = reorder_->isChecked() ? ctx()->partition(picked("partition")) : nullptr;
  if (part_ && (!part_->perm.count(L) || part_->dFF != F_)) part_.reset();
  perm_.resize(F_);
  if (part_) perm_ = part_->perm.at(L);
  else std::iota(perm_.begin(), perm_.end(), 0);
  inv_.assign(F_, 0);
  for (int i = 0; i < F_; ++i) inv_[perm_[i]] = i;

  // Summed-area table of the reordered matrix with the diagonal removed (the
  // diagonal is each neuron's own count and would swamp the colour scale).
  const auto& C = *coact_;
  sat_.assign(static_cast<size_t>(F_ + 1) * (F_ + 1), 0.0);
  double vmax = 1;
  for (int r = 0; r < F_; ++r) {
    const int32_t* row = C.data() + static_cast<size_t>(perm_[r]) * F_;
    double acc = 0;
    double* s = sat_.data() + static_cast<size_t>(r + 1) * (F_ + 1);
    const double* up = sat_.data() + static_cast<size_t>(r) * (F_ + 1);
    for (int c = 0; c < F_; ++c) {
      double v = (c == r) ? 0.0 : row[perm_[c]];
      vmax = std::max(vmax, v);
      acc += v;
      s[c + 1] = up[c + 1] + acc;
    }
  }
  vmax_ = vmax;
  // The low end: the 1st percentile of the off-diagonal counts (on a strided
  // sample of at most 2^18 entries), so a few near-zero pairs do not stretch
  // the scale and the expert blocks keep their contrast in dense layers.
  auto lowPercentile = [this](const std::vector<int32_t>& M) {
    const size_t n = size_t(F_) * F_;
    const size_t step = std::max<size_t>(1, n / (1 << 18));
    std::vector<double> v;
    v.reserve(n / step + 1);
    for (size_t idx = 0; idx < n; idx += step)
      if (idx / F_ != idx % F_) v.push_back(M[idx]);
    if (v.empty()) return 0.0;
    auto nth = v.begin() + static_cast<long>(v.size() / 100);
    std::nth_element(v.begin(), nth, v.end());
    return *nth;
  };
  vmin_ = lowPercentile(C);
  if (scaleMode_->currentIndex() == 1) {  // global: the largest off-diagonal count over all layers
    for (int l2 : rec_->layers) {
      try {
        auto c2 = rec_->coact(l2);
        for (int i = 0; i < F_; ++i)
          for (int j = 0; j < F_; ++j)
            if (i != j) vmax_ = std::max(vmax_, double((*c2)[size_t(i) * F_ + j]));
        vmin_ = std::min(vmin_, lowPercentile(*c2));
      } catch (const std::exception&) {
      }
    }
  }
  if (vmin_ >= vmax_) vmin_ = 0;
  {
    // The diagonal (each neuron's own firing count, far above any pair) is kept
    // out of the colour range: vmax is the largest off-diagonal count, and
    // cells that hold only diagonal entries are NaN, drawn in a neutral grey.
    QCPColorGradient g = gradient(static_cast<ColorMap>(cmap_->currentIndex()));
    g.setNanHandling(QCPColorGradient::nhNanColor);
    g.setNanColor(QColor(150, 150, 150));
    map_->setGradient(g);
  }
  const bool lg = logScale_->isChecked();
  if (lg) {
    // Ticks at 1-2-5 steps inside the range (decades only when it spans many).
    QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
    const bool wide = vmax_ > 100 * std::max(1.0, vmin_);
    for (double dec = 1; dec <= vmax_ * 10; dec *= 10)
      for (double m : {1.0, 2.0, 5.0}) {
        double d = dec * m;
        if ((wide && m != 1.0) || d < vmin_ || d > vmax_) continue;
        t->addTick(std::log10(1 + d), QString("%L1").arg(d, 0, 'f', 0));
      }
    if (vmin_ < 1) t->addTick(0, "0");
    scale_->axis()->setTicker(t);
    scale_->setDataRange(QCPRange(std::log10(1 + vmin_), std::log10(1 + vmax_)));
    scale_->axis()->setLabel("co-active tokens (log scale)");
  } else {
    scale_->axis()->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    scale_->setDataRange(QCPRange(vmin_, vmax_));
    scale_->axis()->setLabel("co-active tokens");
  }
  hover_->setText(QString("Colour range: off-diagonal counts from the 1st percentile (%L1) to the maximum (%L2); "
                          "the diagonal (each neuron's own count) is left out. Hover for neuron ids and counts; "
                          "wheel zooms, drag pans, double-click resets.")
                      .arg(vmin_, 0, 'f', 0).arg(vmax_, 0, 'f', 0));
  QString order = part_ ? QString("neurons ordered by partition %1 (%2 experts)").arg(part_->name).arg(part_->experts)
                        : QString("neurons in model order");
  plot_->xAxis->setLabel(QString("%1: %2").arg(rec_->siteText(L)).arg(order));
  plot_->yAxis->setLabel("neuron (same order)");

  // Expert blocks on the diagonal.
  for (auto* b : blocks_) plot_->removeItem(b);
  blocks_.clear();
  if (selBlock_) plot_->removeItem(selBlock_), selBlock_ = nullptr;
  if (selH_) plot_->removeItem(selH_), selH_ = nullptr;
  if (selV_) plot_->removeItem(selV_), selV_ = nullptr;
  if (part_ && part_->experts <= 256) {
    std::vector<int> sizes = part_->sizes(L);
    int start = 0;
    for (int e = 0; e < part_->experts; ++e) {
      auto* rect = new QCPItemRect(plot_);
      rect->topLeft->setCoords(start, start);
      rect->bottomRight->setCoords(start + sizes[e], start + sizes[e]);
      rect->setPen(QPen(QColor(255, 255, 255, 170), 0.8));
      blocks_.push_back(rect);
      start += sizes[e];
    }
  }
  plot_->xAxis->setRange(0, F_);
  plot_->yAxis->setRange(0, F_);
  rebuildVisible();
  highlight();
}

void CoactView::rebuildVisible() {
  if (!coact_ || F_ == 0) return;
  QCPRange xr = plot_->xAxis->range(), yr = plot_->yAxis->range();
  int x0 = std::clamp(int(std::floor(xr.lower)), 0, F_ - 1), x1 = std::clamp(int(std::ceil(xr.upper)), x0 + 1, F_);
  int y0 = std::clamp(int(std::floor(yr.lower)), 0, F_ - 1), y1 = std::clamp(int(std::ceil(yr.upper)), y0 + 1, F_);
  // Level of detail: never more cells than pixels (and at most kMaxSat per side).
  int px = std::max(50, plot_->axisRect()->width()), py = std::max(50, plot_->axisRect()->height());
  int nx = std::min({x1 - x0, px, kMaxSat}), ny = std::min({y1 - y0, py, kMaxSat});
  gridCols_ = nx;
  gridRows_ = ny;
  map_->data()->setSize(nx, ny);
  map_->data()->setRange(QCPRange(x0, x1), QCPRange(y0, y1));
  // QCPColorMapData places cell centres at the range ends; shift by half a cell.
  double cw = double(x1 - x0) / nx, ch = double(y1 - y0) / ny;
  map_->data()->setRange(QCPRange(x0 + cw / 2, x1 - cw / 2), QCPRange(y0 + ch / 2, y1 - ch / 2));
  const bool lg = logScale_->isChecked();
  const size_t W = F_ + 1;
  for (int j = 0; j < ny; ++j) {
    int ra = y0 + int(std::floor(j * ch)), rb = std::max(ra + 1, y0 + int(std::floor((j + 1) * ch)));
    rb = std::min(rb, F_);
    for (int i = 0; i < nx; ++i) {
      int ca = x0 + int(std::floor(i * cw)), cb = std::max(ca + 1, x0 + int(std::floor((i + 1) * cw)));
      cb = std::min(cb, F_);
      double sum = sat_[rb * W + cb] - sat_[ra * W + cb] - sat_[rb * W + ca] + sat_[ra * W + ca];
      int cells = (rb - ra) * (cb - ca);
      if (ra < cb && ca < rb) cells -= std::min(rb, cb) - std::max(ra, ca);  // diagonal cells excluded
      if (cells <= 0) {  // only diagonal entries: outside the colour scale
        map_->data()->setCell(i, j, std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      double v = sum / cells;
      map_->data()->setCell(i, j, lg ? std::log10(1 + v) : v);
    }
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

void CoactView::highlight() {
  if (!coact_ || F_ == 0) return;
  const int L = layer();
  if (selH_) plot_->removeItem(selH_), selH_ = nullptr;
  if (selV_) plot_->removeItem(selV_), selV_ = nullptr;
  if (selBlock_) plot_->removeItem(selBlock_), selBlock_ = nullptr;
  QPen pen(QColor(230, 60, 30), 1.5);
  if (ctx()->selectedLayer() == L && ctx()->selectedNeuron() >= 0 && ctx()->selectedNeuron() < F_) {
    double p = inv_[ctx()->selectedNeuron()] + 0.5;
    selH_ = new QCPItemStraightLine(plot_);
    selH_->point1->setCoords(0, p);
    selH_->point2->setCoords(1, p);
    selV_ = new QCPItemStraightLine(plot_);
    selV_->point1->setCoords(p, 0);
    selV_->point2->setCoords(p, 1);
    selH_->setPen(QPen(pen.color(), 1, Qt::DashLine));
    selV_->setPen(QPen(pen.color(), 1, Qt::DashLine));
  }
  if (part_ && ctx()->selectedLayer() == L && ctx()->selectedExpert() >= 0 && ctx()->selectedExpert() < part_->experts) {
    std::vector<int> sizes = part_->sizes(L);
    int start = 0;
    for (int e = 0; e < ctx()->selectedExpert(); ++e) start += sizes[e];
    selBlock_ = new QCPItemRect(plot_);
    selBlock_->topLeft->setCoords(start, start);
    selBlock_->bottomRight->setCoords(start + sizes[ctx()->selectedExpert()], start + sizes[ctx()->selectedExpert()]);
    selBlock_->setPen(QPen(pen.color(), 2.5));
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

double CoactView::gridValue(int col, int row) const {
  if (!map_ || col < 0 || row < 0 || col >= map_->data()->keySize() || row >= map_->data()->valueSize())
    return std::numeric_limits<double>::quiet_NaN();
  return map_->data()->cell(col, row);
}

QString CoactView::csvData() const {
  // The displayed grid: each cell is the mean co-activation count over a block
  // of reordered neurons (exact counts when zoomed in to one neuron per cell).
  QString out = "display_row_start,display_row_end,display_col_start,display_col_end,mean_coactive_tokens\n";
  if (!coact_ || F_ == 0) return out;
  auto* d = map_->data();
  const bool lg = logScale_->isChecked();
  for (int j = 0; j < d->valueSize(); ++j)
    for (int i = 0; i < d->keySize(); ++i) {
      double k, v;
      d->cellToCoord(i, j, &k, &v);
      double cw = d->keyRange().size() / std::max(1, d->keySize() - 1), ch = d->valueRange().size() / std::max(1, d->valueSize() - 1);
      double val = d->cell(i, j);
      if (std::isnan(val)) continue;  // a diagonal-only cell (no pair count)
      if (lg) val = std::pow(10.0, val) - 1;
      out += QString("%1,%2,%3,%4,%5\n").arg(std::lround(v - ch / 2)).arg(std::lround(v + ch / 2)).arg(std::lround(k - cw / 2))
                 .arg(std::lround(k + cw / 2)).arg(val, 0, 'g', 8);
    }
  return out;
}

}  // namespace moefy::views
