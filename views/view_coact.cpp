#include "views/qcp.h"

#include <QCheckBox>
#include <QFontMetrics>
#include <QHBoxLayout>
#include <QPointer>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/split/coact_weight.h"
#include "views/jobrunner.h"
#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

namespace {
constexpr int kMaxSat = 4096;  // the summed-area table is built on at most this many rows/cols

// The colour range's low end: the 1st percentile of the off-diagonal entries
// of M [F * F] (on a strided sample of at most 2^18 entries), so a few
// near-zero pairs do not stretch the scale and the expert blocks keep their
// contrast in dense layers. Any measure (counts or normalised).
template <typename T>
double lowPercentile(const T* M, int F) {
  const size_t n = size_t(F) * F;
  const size_t step = std::max<size_t>(1, n / (1 << 18));
  std::vector<double> v;
  v.reserve(n / step + 1);
  for (size_t idx = 0; idx < n; idx += step)
    if (idx / F != idx % F) v.push_back(M[idx]);
  if (v.empty()) return 0.0;
  auto nth = v.begin() + static_cast<long>(v.size() / 100);
  std::nth_element(v.begin(), nth, v.end());
  return *nth;
}

template <typename T>
double offDiagonalMax(const T* M, int F) {
  double m = 0;
  for (int i = 0; i < F; ++i)
    for (int j = 0; j < F; ++j)
      if (i != j) m = std::max(m, double(M[size_t(i) * F + j]));
  return m;
}

// One layer's normalised co-activation [F * F] in neuron order (the diagonal
// 0: it is never drawn), from the counts C [F * F] whose diagonal is each
// neuron's count, over T tokens. The pair formula is the splitter's
// (coactWeight), so the map shows the unscaled graph weights. Symmetric: the
// upper triangle is computed and mirrored (half the logs). Cost at d_ff 3072:
// 4.7M pairs, ~20 ns per log, ~0.1 s for PPMI: hence the worker above
// syncWidth_. Thread-safe (pure); polls `job` between rows.
std::shared_ptr<std::vector<float>> normalisedMatrix(const std::vector<int32_t>& C, int F, double T,
                                                     moefy::CoactMeasure m, moefy::JobContext& job) {
  auto out = std::make_shared<std::vector<float>>(size_t(F) * F, 0.0f);
  float* M = out->data();
  for (int i = 0; i < F; ++i) {
    if ((i & 63) == 0) job.checkCancel();
    const double ci = C[size_t(i) * F + i];
    for (int j = i + 1; j < F; ++j) {
      const float v = float(moefy::coactWeight(m, C[size_t(i) * F + j], ci, C[size_t(j) * F + j], T));
      M[size_t(i) * F + j] = v;
      M[size_t(j) * F + i] = v;
    }
  }
  return out;
}

QString measureTitle(moefy::CoactMeasure m) {
  switch (m) {
    case moefy::CoactMeasure::Jaccard:
      return "Jaccard c_ij / (c_i + c_j - c_ij)";
    case moefy::CoactMeasure::Ppmi:
      return "PPMI max(0, ln(c_ij T / (c_i c_j)))";
    case moefy::CoactMeasure::Count:
      break;
  }
  return "co-active tokens";
}

QString fmtValue(moefy::CoactMeasure m, double v) {
  return m == moefy::CoactMeasure::Count ? QString("%L1").arg(v, 0, 'f', 0) : QString::number(v, 'g', 4);
}
}  // namespace

CoactView::CoactView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Co-activation", PickRecording | PickPartition | PickLayer, parent) {
  optionsBar()->addWidget(new QLabel("Measure: ", optionsBar()));
  measure_ = new QComboBox(optionsBar());
  measure_->setObjectName("coactMeasure");
  measure_->addItem("Counts", "counts");
  measure_->addItem("Jaccard", "jaccard");
  measure_->addItem("PPMI", "ppmi");
  measure_->setItemData(0, "c_ij: tokens on which both neurons are active (split --weighting raw)", Qt::ToolTipRole);
  measure_->setItemData(1, "c_ij / (c_i + c_j - c_ij), c_i = the diagonal (split --weighting jaccard, x 1000)",
                        Qt::ToolTipRole);
  measure_->setItemData(2, "max(0, ln(c_ij T / (c_i c_j))), T = the site's tokens (split --weighting ppmi, x 100)",
                        Qt::ToolTipRole);
  measure_->setToolTip("The pair measure drawn; Jaccard and PPMI are the splitter's graph weights, unscaled");
  optionsBar()->addWidget(measure_);
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
  for (QComboBox* c : {measure_, scaleMode_, cmap_})
    connect(c, &QComboBox::currentIndexChanged, this, [this] { refresh(); });

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
    const QString t =
        hoverText(plot_->xAxis->pixelToCoord(ev->position().x()), plot_->yAxis->pixelToCoord(ev->position().y()));
    if (t.isEmpty()) return;
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

moefy::CoactMeasure CoactView::measure() const {
  return moefy::parseCoactMeasure(measure_->currentData().toString().toStdString())
      .value_or(moefy::CoactMeasure::Count);
}

QString CoactView::expertName(int label) const {
  if (part_ && label == part_->experts) return "shared";
  return QString("E%1").arg(label);
}

QString CoactView::hoverText(double x, double y) const {
  int r, c;
  long long n;
  if (!cellAt(x, y, &r, &c, &n)) return {};
  const std::vector<int32_t>* labels = part_ && part_->labels.count(layer()) ? &part_->labels.at(layer()) : nullptr;
  if (r == c) {
    QString t = QString("neuron %1").arg(r);
    if (labels) t += QString(" (expert %1)").arg(expertName((*labels)[r]));
    return t + QString(" fires on %L1 tokens (the diagonal: drawn grey, outside the colour scale)").arg(n);
  }
  const auto& C = *coact_;
  const double ci = C[size_t(r) * F_ + r], cj = C[size_t(c) * F_ + c];
  QString t = QString("row neuron %1, column neuron %2").arg(r).arg(c);
  if (labels) t += QString(" (experts %1 / %2)").arg(expertName((*labels)[r]), expertName((*labels)[c]));
  t += QString(": co-active on %L1 tokens, Jaccard %2, PPMI %3")
           .arg(n)
           .arg(moefy::coactJaccard(double(n), ci, cj), 0, 'f', 4)
           .arg(moefy::coactPpmi(double(n), ci, cj, tokens_), 0, 'f', 3);
  return t;
}

QString CoactView::figureBaseName() const {
  QString base = FigureView::figureBaseName();  // co-activation[-L3 | -dec.blk.1]
  const moefy::CoactMeasure m = measure();
  if (m != moefy::CoactMeasure::Count && base.startsWith("co-activation"))
    base.insert(int(strlen("co-activation")), QString("-") + moefy::coactMeasureName(m));
  return base;
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
  std::shared_ptr<const std::vector<int32_t>> counts;
  try {
    counts = rec_->coact(L);
  } catch (const std::exception& e) {
    ctx()->report(StudioContext::Error, e.what());
    setEmptyState(QString("Cannot read the co-activation of %1:\n%2").arg(rec_->siteText(L)).arg(e.what()));
    return;
  }
  const int F = rec_->widthOf(L);  // d_ff; an expert site's d_expert
  const double T = double(rec_->siteTokensOf(L));
  const moefy::CoactMeasure m = measure();
  const bool global = scaleMode_->currentIndex() == 1;

  // The normalised matrix (and, for the global scale, every layer's colour
  // range) once per recording, layer and measure: synchronously for narrow
  // sites, else on a worker (the map is redrawn when it is done).
  // By value: a worker's result is keyed by the recording it was computed for.
  auto keyOf = [dir = rec_->dir, m](int l) {
    return QString("%1|%2|%3").arg(dir).arg(l).arg(moefy::coactMeasureName(m));
  };
  if (m != moefy::CoactMeasure::Count) {
    const QString key = keyOf(L);
    std::vector<int> rangeLayers;  // layers whose range the global scale still needs
    if (global)
      for (int l2 : rec_->layers)
        if (l2 != L && !ranges_.count(keyOf(l2))) rangeLayers.push_back(l2);
    if (normKey_ != key || !norm_ || !rangeLayers.empty()) {
      // The same computation already running (a redraw asked again meanwhile): wait for it.
      if (computing_ && pendingKey_ == key + (global ? "|global" : "") && ctx()->tasks()->isRunning("coact-measure"))
        return;
      if (normKey_ != key) norm_.reset();
      auto rec = rec_;
      auto have = norm_;
      // Runs on any thread: reads only the recording (its coact() is thread-safe).
      auto work = [rec, L, F, T, m, rangeLayers, have](moefy::JobContext& job) {
        std::pair<std::shared_ptr<const std::vector<float>>, std::map<int, std::pair<double, double>>> out;
        out.first = have ? have : normalisedMatrix(*rec->coact(L), F, T, m, job);
        for (int l2 : rangeLayers) {
          const int F2 = rec->widthOf(l2);
          auto M2 = normalisedMatrix(*rec->coact(l2), F2, double(rec->siteTokensOf(l2)), m, job);
          out.second[l2] = {lowPercentile(M2->data(), F2), offDiagonalMax(M2->data(), F2)};
        }
        return out;
      };
      auto apply = [this, key, keyOf](const decltype(work(moefy::JobContext::none()))& result) {
        norm_ = result.first;
        normKey_ = key;
        for (const auto& [l2, range] : result.second) ranges_[keyOf(l2)] = range;
      };
      if (F <= syncWidth_ && (rangeLayers.empty() || F <= syncWidth_ / 2)) {
        apply(work(moefy::JobContext::none()));
      } else {
        computing_ = true;
        pendingKey_ = key + (global ? "|global" : "");
        setEmptyState(QString("Computing the %1 matrix of %2 (%3 x %3)...")
                          .arg(measure_->currentText(), rec_->siteText(L))
                          .arg(F));
        QPointer<CoactView> self(this);
        ctx()->tasks()->run(
            "coact-measure", this,
            [self, work, apply](moefy::JobContext& job) -> std::function<void()> {
              job.setStage("co-activation measure");
              auto result = work(job);
              return [self, apply, result] {
                if (!self) return;
                self->computing_ = false;
                apply(result);
                self->refresh();
              };
            },
            [self](const QString& error) {
              if (!self) return;
              self->computing_ = false;
              self->ctx()->report(StudioContext::Error, "Co-activation: " + error);
              self->setEmptyState("Cannot compute the normalised co-activation:\n" + error);
            });
        return;
      }
    }
  }
  if (computing_) ctx()->tasks()->cancel("coact-measure");  // counts picked meanwhile: its result is not needed
  computing_ = false;
  coact_ = counts;
  setEmptyState("");
  F_ = F;
  tokens_ = T;
  part_ = reorder_->isChecked() ? ctx()->partition(picked("partition")) : nullptr;
  if (part_ && (!part_->perm.count(L) || part_->dFF != F_)) part_.reset();
  perm_.resize(F_);
  if (part_) perm_ = part_->perm.at(L);
  else std::iota(perm_.begin(), perm_.end(), 0);
  inv_.assign(F_, 0);
  for (int i = 0; i < F_; ++i) inv_[perm_[i]] = i;

  // Summed-area table of the reordered matrix (counts or the measure) with the
  // diagonal removed (each neuron's own count would swamp the colour scale;
  // the measures are not defined there).
  const bool normalised = m != moefy::CoactMeasure::Count;
  sat_.assign(static_cast<size_t>(F_ + 1) * (F_ + 1), 0.0);
  auto buildSat = [this](const auto* M) {
    for (int r = 0; r < F_; ++r) {
      const auto* row = M + static_cast<size_t>(perm_[r]) * F_;
      double acc = 0;
      double* s = sat_.data() + static_cast<size_t>(r + 1) * (F_ + 1);
      const double* up = sat_.data() + static_cast<size_t>(r) * (F_ + 1);
      for (int c = 0; c < F_; ++c) {
        acc += (c == r) ? 0.0 : double(row[perm_[c]]);
        s[c + 1] = up[c + 1] + acc;
      }
    }
  };
  // The colour range, for every measure: the 1st percentile of the
  // off-diagonal values to their maximum (over every layer for the global scale).
  if (normalised) {
    buildSat(norm_->data());
    vmin_ = lowPercentile(norm_->data(), F_);
    vmax_ = offDiagonalMax(norm_->data(), F_);
    ranges_[keyOf(L)] = {vmin_, vmax_};
    if (global)
      for (int l2 : rec_->layers) {
        auto it = ranges_.find(keyOf(l2));
        if (it == ranges_.end()) continue;
        vmin_ = std::min(vmin_, it->second.first);
        vmax_ = std::max(vmax_, it->second.second);
      }
  } else {
    const auto& C = *coact_;
    buildSat(C.data());
    vmax_ = std::max(1.0, offDiagonalMax(C.data(), F_));
    vmin_ = lowPercentile(C.data(), F_);
    if (global) {  // the largest off-diagonal count over all layers
      for (int l2 : rec_->layers) {
        try {
          auto c2 = rec_->coact(l2);
          const int F2 = rec_->widthOf(l2);
          vmax_ = std::max(vmax_, offDiagonalMax(c2->data(), F2));
          vmin_ = std::min(vmin_, lowPercentile(c2->data(), F2));
        } catch (const std::exception&) {
        }
      }
    }
  }
  if (vmin_ >= vmax_) vmin_ = normalised ? std::min(0.0, vmax_) : 0;
  if (vmin_ >= vmax_) vmax_ = vmin_ + 1;  // an all-zero measure: any non-empty range
  {
    // The diagonal (each neuron's own firing count, far above any pair) is kept
    // out of the colour range: vmax is the largest off-diagonal value, and
    // cells that hold only diagonal entries are NaN, drawn in a neutral grey.
    QCPColorGradient g = gradient(static_cast<ColorMap>(cmap_->currentIndex()));
    g.setNanHandling(QCPColorGradient::nhNanColor);
    g.setNanColor(QColor(150, 150, 150));
    map_->setGradient(g);
  }
  // Log colour is for counts (they span decades); the measures are drawn linearly.
  logScale_->setEnabled(!normalised);
  logScale_->setToolTip(normalised ? "Jaccard and PPMI are drawn on a linear scale" : "log10(1 + count) colour");
  logColour_ = logScale_->isChecked() && !normalised;
  if (logColour_) {
    // Ticks at 1-2-5 steps inside the range (decades only when it spans many).
    QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
    const bool wide = vmax_ > 100 * std::max(1.0, vmin_);
    for (double dec = 1; dec <= vmax_ * 10; dec *= 10)
      for (double mm : {1.0, 2.0, 5.0}) {
        double d = dec * mm;
        if ((wide && mm != 1.0) || d < vmin_ || d > vmax_) continue;
        t->addTick(std::log10(1 + d), QString("%L1").arg(d, 0, 'f', 0));
      }
    if (vmin_ < 1) t->addTick(0, "0");
    scale_->axis()->setTicker(t);
    scale_->setDataRange(QCPRange(std::log10(1 + vmin_), std::log10(1 + vmax_)));
    scale_->axis()->setLabel("co-active tokens (log scale)");
  } else {
    scale_->axis()->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    scale_->setDataRange(QCPRange(vmin_, vmax_));
    scale_->axis()->setLabel(normalised ? measure_->currentText() : QString("co-active tokens"));
  }
  caption_ = QString(
                 "%1. Colour range%2: off-diagonal values from the 1st percentile (%3) to the maximum (%4); "
                 "the diagonal (each neuron's own count) is left out. Hover for neuron ids, count, Jaccard and "
                 "PPMI; wheel zooms, drag pans, double-click resets.")
                 .arg(normalised ? measureTitle(m) + QString(" (T = %L1 tokens)").arg(T, 0, 'f', 0)
                                 : QString("Co-active tokens (counts)"))
                 .arg(global ? " (every layer)" : "")
                 .arg(fmtValue(m, vmin_), fmtValue(m, vmax_));
  hover_->setText(caption_);
  QString order = part_ ? QString("neurons ordered by partition %1 (%2 experts)").arg(part_->name).arg(part_->experts)
                        : QString("neurons in model order");
  plot_->xAxis->setLabel(QString("%1: %2").arg(rec_->siteText(L)).arg(order));
  plot_->yAxis->setLabel(part_ ? "expert (same order)" : "neuron (same order)");

  // Expert blocks on the diagonal (the shared expert's neurons, label E, last).
  for (auto* b : blocks_) plot_->removeItem(b);
  blocks_.clear();
  blockStart_.clear();
  if (selBlock_) plot_->removeItem(selBlock_), selBlock_ = nullptr;
  if (selH_) plot_->removeItem(selH_), selH_ = nullptr;
  if (selV_) plot_->removeItem(selV_), selV_ = nullptr;
  if (part_) {
    std::vector<int> sizes = part_->sizes(L);
    int start = 0;
    for (int e = 0; e < part_->experts; ++e) {
      blockStart_.push_back(start);
      start += sizes[e];
    }
    if (start < F_) blockStart_.push_back(start);  // the shared expert
    blockStart_.push_back(F_);
    if (part_->experts <= 256)
      for (size_t e = 0; e + 1 < blockStart_.size(); ++e) {
        auto* rect = new QCPItemRect(plot_);
        rect->topLeft->setCoords(blockStart_[e], blockStart_[e]);
        rect->bottomRight->setCoords(blockStart_[e + 1], blockStart_[e + 1]);
        rect->setPen(QPen(QColor(255, 255, 255, 170), 0.8));
        blocks_.push_back(rect);
      }
  }
  plot_->xAxis->setRange(0, F_);
  plot_->yAxis->setRange(0, F_);
  rebuildVisible();
  highlight();
}

void CoactView::updateExpertTicks() {
  if (!part_ || blockStart_.size() < 2) {
    for (QCPAxis* ax : {plot_->xAxis, plot_->yAxis})
      if (ax->ticker().dynamicCast<QCPAxisTickerText>())
        ax->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    return;
  }
  // One label per expert block at its centre; when blocks are narrower than a
  // label, every n-th (n = 1, 2, 5, 10, ...), and any label that would still
  // touch its kept neighbour (unequal blocks) is left out: labels never overlap.
  const int blocks = static_cast<int>(blockStart_.size()) - 1;
  for (QCPAxis* ax : {plot_->xAxis, plot_->yAxis}) {
    const QFontMetrics fm(ax->tickLabelFont());
    const bool horizontal = ax == plot_->xAxis;
    auto extent = [&](const QString& label) { return horizontal ? fm.horizontalAdvance(label) : fm.height(); };
    const int widest = std::max(extent(expertName(blocks - 1)), extent(expertName(part_->experts)));
    const double gap = 6;
    const double pxPerNeuron = std::abs(ax->coordToPixel(1) - ax->coordToPixel(0));
    int narrowest = F_;
    for (int e = 0; e < blocks; ++e) narrowest = std::min(narrowest, std::max(1, blockStart_[e + 1] - blockStart_[e]));
    int step = 1;
    for (int base = 1; narrowest * pxPerNeuron * step < widest + gap; base *= 10) {
      for (int mult : {1, 2, 5}) {
        step = base * mult;
        if (narrowest * pxPerNeuron * step >= widest + gap) break;
      }
      if (base > blocks) break;
    }
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    double lastPx = -1e9, lastHalf = 0;
    for (int e = 0; e < blocks; ++e) {
      const bool shared = e == part_->experts;
      if (!shared && e % step != 0) continue;
      const double centre = 0.5 * (blockStart_[e] + blockStart_[e + 1]);
      const QString label = expertName(e);
      const double px = ax->coordToPixel(centre), half = extent(label) / 2.0;
      if (std::abs(px - lastPx) < lastHalf + half + gap) continue;
      ticker->addTick(centre, label);
      lastPx = px;
      lastHalf = half;
    }
    ax->setTicker(ticker);
  }
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
  const bool lg = logColour_;
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
  updateExpertTicks();
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
  const double v = map_->data()->cell(col, row);
  return logColour_ && !std::isnan(v) ? std::pow(10.0, v) - 1 : v;
}

QString CoactView::csvData() const {
  // The displayed grid: each cell is the mean of the measure (count, Jaccard
  // or PPMI) over a block of reordered neurons (exact values when zoomed in to
  // one neuron per cell).
  const moefy::CoactMeasure m = measure();
  QString out = QString("display_row_start,display_row_end,display_col_start,display_col_end,mean_%1\n")
                    .arg(m == moefy::CoactMeasure::Count ? QString("coactive_tokens") : moefy::coactMeasureName(m));
  if (!coact_ || F_ == 0) return out;
  auto* d = map_->data();
  const bool lg = logColour_;
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
