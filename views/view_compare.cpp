// The comparison dashboard (issue 20, "what researchers reach for first"):
// every evaluation of the workspace overlaid on one active-fraction or
// FFN-FLOP-fraction axis, its numbers, and the per-site error heatmap.
#include "views/qcp.h"

#include <QDateTime>
#include <QFileInfo>
#include <QHeaderView>
#include <QListWidget>
#include <QMouseEvent>
#include <QSplitter>
#include <QToolButton>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "views/style.h"
#include "views/table_items.h"
#include "views/views.h"

namespace moefy::views {

namespace {

const double kNan = std::nan("");

// NaN as "-"; a value that rounds to zero prints as 0 (never "-0.0000", e.g. a KL of -1e-9 from rounding).
QString fixedText(double v, int prec) {
  if (std::isnan(v)) return "-";
  if (std::abs(v) < 0.5 * std::pow(10.0, -prec)) v = 0;
  return QString::number(v, 'f', prec);
}
QString exact(double v) { return std::isnan(v) ? QString() : QString::number(v, 'g', 8); }

/// The metric's value of a point; NaN when the evaluation lacks it (no
/// timings, an oracle router's speed, no dense perplexity).
double metricValue(const Evaluation& e, const Evaluation::Point& p, int metric) {
  switch (metric) {
    case CompareView::PerplexityRatio:
      return e.densePpl > 0 && p.ppl > 0 ? e.densePpl / p.ppl : kNan;
    case CompareView::Perplexity:
      return p.ppl;
    case CompareView::Top1:
      return p.top1;
    case CompareView::Kl:
      return p.kl;
    case CompareView::ForwardSpeedup:
      return p.fwdSpeedup;
    default:
      return p.genSpeedup;
  }
}

bool speedMetric(int metric) { return metric == CompareView::ForwardSpeedup || metric == CompareView::GenerateSpeedup; }

/// "1.52 [1.40-1.61] (5)": the median speed-up, its spread over the timed runs and their count.
QString speedText(double median, double lo, double hi, int runs) {
  if (std::isnan(median)) return "-";
  QString t = QString::number(median, 'f', 2);
  if (!std::isnan(lo) && !std::isnan(hi)) t += QString(" [%1-%2]").arg(lo, 0, 'f', 2).arg(hi, 0, 'f', 2);
  if (runs > 0) t += QString(" (%1)").arg(runs);
  return t;
}

QCPScatterStyle::ScatterShape markerOf(int style) {
  return static_cast<QCPScatterStyle::ScatterShape>(QCPScatterStyle::ssCircle + (style % 6));
}

}  // namespace

CompareView::CompareView(StudioContext* ctx, QWidget* parent) : FigureView(ctx, "Compare", 0, parent) {
  optionsBar()->addWidget(new QLabel(" x axis: ", optionsBar()));
  xAxis_ = new QComboBox(optionsBar());
  xAxis_->setObjectName("compareXAxis");
  xAxis_->addItem("active fraction (k / E)", 0);
  xAxis_->addItem("FFN FLOPs / dense (measured)", 1);
  xAxis_->setToolTip(
      "Plot against the share of experts run per token, or against the FFN multiply-adds per token the "
      "evaluation measured over the dense model's (eval.json ffn_flops_fraction; router and shared expert "
      "included). Results without a measured fraction are left out on the FLOP axis.");
  optionsBar()->addWidget(xAxis_);
  optionsBar()->addWidget(new QLabel("  y: ", optionsBar()));
  metric_ = new QComboBox(optionsBar());
  metric_->setObjectName("compareMetric");
  metric_->addItem("perplexity ratio (dense / MoE)", PerplexityRatio);
  metric_->addItem("perplexity (log)", Perplexity);
  metric_->addItem("top-1 agreement with dense", Top1);
  metric_->addItem("KL(dense || MoE)", Kl);
  metric_->addItem("forward speed-up", ForwardSpeedup);
  metric_->addItem("generation speed-up", GenerateSpeedup);
  optionsBar()->addWidget(metric_);
  for (QComboBox* c : {xAxis_, metric_}) connect(c, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
  auto* all = new QToolButton(optionsBar());
  all->setText("Check all");
  all->setObjectName("compareCheckAll");
  auto* none = new QToolButton(optionsBar());
  none->setText("None");
  none->setObjectName("compareCheckNone");
  optionsBar()->addWidget(new QLabel("  ", optionsBar()));
  optionsBar()->addWidget(all);
  optionsBar()->addWidget(none);
  auto checkAll = [this](bool on) {
    filling_ = true;
    for (int i = 0; i < list_->count(); ++i) {
      QListWidgetItem* it = list_->item(i);
      if (!(it->flags() & Qt::ItemIsUserCheckable)) continue;
      it->setCheckState(on ? Qt::Checked : Qt::Unchecked);
      checked_[it->data(Qt::UserRole).toString()] = on;
    }
    filling_ = false;
    redraw();
  };
  connect(all, &QToolButton::clicked, this, [checkAll] { checkAll(true); });
  connect(none, &QToolButton::clicked, this, [checkAll] { checkAll(false); });

  auto* lay = new QHBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  auto* split = new QSplitter(Qt::Horizontal, body());
  split->setChildrenCollapsible(false);
  // Left: the evaluations to compare.
  auto* side = new QWidget(split);
  auto* sideLay = new QVBoxLayout(side);
  sideLay->setContentsMargins(0, 0, 0, 0);
  auto* head = new QLabel("Evaluations", side);
  head->setStyleSheet("QLabel { font-weight: bold; }");
  sideLay->addWidget(head);
  listNote_ = new QLabel(side);
  listNote_->setWordWrap(true);
  listNote_->setStyleSheet("QLabel { color: #555; }");
  listNote_->setVisible(false);
  sideLay->addWidget(listNote_);
  list_ = new QListWidget(side);
  list_->setObjectName("compareEvaluations");
  list_->setMinimumWidth(120);
  list_->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  list_->setTextElideMode(Qt::ElideMiddle);
  sideLay->addWidget(list_, 1);
  side->setMaximumWidth(240);
  connect(list_, &QListWidget::itemChanged, this, [this](QListWidgetItem* it) {
    if (filling_) return;
    checked_[it->data(Qt::UserRole).toString()] = it->checkState() == Qt::Checked;
    redraw();
  });
  // Right: the warning line, the figure, the numbers.
  auto* right = new QWidget(split);
  auto* rightLay = new QVBoxLayout(right);
  rightLay->setContentsMargins(0, 0, 0, 0);
  warning_ = new QLabel(right);
  warning_->setObjectName("compareDataWarning");
  warning_->setWordWrap(true);
  warning_->setStyleSheet("QLabel { background: #f9a825; color: black; border-radius: 3px; padding: 2px 6px; }");
  warning_->setVisible(false);
  rightLay->addWidget(warning_);
  auto* vsplit = new QSplitter(Qt::Vertical, right);
  vsplit->setChildrenCollapsible(false);
  plots_ = new QWidget(vsplit);
  plots_->setObjectName("comparePlots");
  auto* row = new QHBoxLayout(plots_);
  row->setContentsMargins(0, 0, 0, 0);
  curves_ = new QCustomPlot(plots_);
  curves_->setObjectName("compareCurves");
  addTitle(curves_, "Evaluations compared");
  curveCaption_ = addDataCaption(curves_);
  applyPublicationStyle(curves_);
  curves_->legend->setFont(figureFont(7));
  curves_->legend->setIconSize(QSize(20, 9));
  curves_->legend->setRowSpacing(0);
  curves_->setMinimumSize(220, 180);

  heat_ = new QCustomPlot(plots_);
  heat_->setObjectName("compareHeatmap");
  heat_->setMinimumSize(220, 180);
  // Whole cells (the trial found the edge rows drawn at half height with a
  // tight boundary), row 0 at the top as in the table.
  std::tie(heatMap_, heatScale_) = addHeatmap(heat_);
  addTitle(heat_, "Relative FFN error per site");
  heatCaption_ = addDataCaption(heat_);
  applyPublicationStyle(heat_);
  heatScale_->axis()->setTickLabelFont(figureFont(8));
  heatScale_->axis()->setLabelFont(figureFont(9));
  heatScale_->axis()->setLabel("layer_rel_error");
  for (QCPAxis* a : {heat_->xAxis, heat_->yAxis}) {
    a->grid()->setVisible(false);
    a->setTickLabelFont(figureFont(7));
    a->setSubTicks(false);
  }
  heat_->xAxis->setTickLabelRotation(-40);
  // Whether the cells hold their values depends on the laid-out axis rect
  // (known after the layout, not at the resize event): re-decided after
  // every layout, re-placed only when the answer changes (no replot loop).
  connect(heat_, &QCustomPlot::afterLayout, this, [this] {
    if (heatCellsHoldText() != heatTextsShown_) placeHeatTexts();
  });
  for (QCustomPlot* p : {curves_, heat_}) {
    p->installEventFilter(this);  // captions re-wrap and cell values re-place on resize
    connect(p, &QCustomPlot::mouseMove, this, [this, p](QMouseEvent* ev) {
      const QString text = hoverText(p, ev->position());
      if (text.isEmpty())
        QToolTip::hideText();
      else
        QToolTip::showText(ev->globalPosition().toPoint(), text, p);
    });
    row->addWidget(p, 1);
  }
  table_ = new QTableWidget(vsplit);
  table_->setObjectName("compareNumbers");
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->verticalHeader()->setVisible(false);
  table_->setMinimumHeight(90);
  table_->setWordWrap(false);
  table_->setTextElideMode(Qt::ElideRight);
  table_->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);  // the columns share the width (Stretch)
  // Short headers (the columns share the width; at 1366x768 each gets ~65 px); the tooltips name them in full.
  const QStringList headers{"eval", "router", "k/E", "FLOPs", "ppl", "ratio", "top-1", "KL", "fwd x", "gen x"};
  const QStringList tips{"evaluation folder (hover for its data)",
                         "router series (site group in brackets for encoder-decoder models)",
                         "active routed experts k / E",
                         "measured FFN FLOPs per token / dense (ffn_flops_fraction; router and shared expert included)",
                         "perplexity",
                         "ratio: dense perplexity / this perplexity (1 = dense; the plot's perplexity ratio)",
                         "top-1 agreement with the dense model",
                         "KL(dense || MoE), nats per scored position",
                         "forward speed-up over dense: median (hover a cell for [min-max over the timed runs] (runs))",
                         "generation speed-up over dense: median (hover a cell for [min-max] (runs))"};
  table_->setColumnCount(headers.size());
  table_->setHorizontalHeaderLabels(headers);
  for (int c = 0; c < headers.size(); ++c) table_->horizontalHeaderItem(c)->setToolTip(tips[c]);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  table_->horizontalHeader()->setMinimumSectionSize(30);
  // Sorted by evaluation (stable: each one's results stay in file order) until a header is clicked.
  table_->horizontalHeader()->setSortIndicator(0, Qt::AscendingOrder);
  table_->setSortingEnabled(true);
  vsplit->addWidget(plots_);
  vsplit->addWidget(table_);
  vsplit->setStretchFactor(0, 3);
  vsplit->setStretchFactor(1, 2);
  rightLay->addWidget(vsplit, 1);
  split->addWidget(side);
  split->addWidget(right);
  split->setStretchFactor(0, 0);
  split->setStretchFactor(1, 1);
  split->setSizes({170, 700});
  lay->addWidget(split);
  refresh();
}

QWidget* CompareView::figureRoot() { return plots_; }

bool CompareView::dataWarningShown() const { return !warning_->isHidden() && !warning_->text().isEmpty(); }

bool CompareView::eventFilter(QObject* watched, QEvent* event) {
  if (event->type() == QEvent::Resize && (watched == curves_ || watched == heat_)) layoutCaptions();
  return FigureView::eventFilter(watched, event);
}

void CompareView::refresh() {
  if (!ctx()->hasWorkspace()) {
    entries_.clear();
    filling_ = true;
    list_->clear();
    filling_ = false;
    setEmptyState("No workspace open.");
    return;
  }
  if (ctx()->workspace().dir != workspace_) {
    // Check states and curve styles belong to one workspace.
    workspace_ = ctx()->workspace().dir;
    checked_.clear();
    styles_.clear();
  }
  rebuildList();
  if (entries_.empty()) {
    setEmptyState(
        "No evaluation to compare yet.\n\nRun Pipeline > Evaluate... (or `moefy eval MODEL CORPUS --partition P "
        "--router R --out WORKSPACE/evaluations/NAME`) once per partition, router or setting you want to compare; "
        "every evaluation of the workspace is listed here and overlaid on one active-fraction or FFN-FLOP axis.");
    return;
  }
  setEmptyState("");
  redraw();
}

void CompareView::rebuildList() {
  std::vector<Entry> entries;
  for (const ArtefactRef& a : ctx()->artefacts()) {
    if (a.kind != "evaluation") continue;
    Entry e{a.path, a.name, ctx()->evaluation(a.path),
            QString()};  // a failed load is reported once, in the issues dock
    if (!e.eval) {
      e.error = ctx()->loadError(a.path);
      if (e.error.isEmpty()) e.error = a.summary;
    }
    entries.push_back(std::move(e));
  }
  // Default check states: on the first fill of a workspace, the newest
  // kDefaultChecked readable evaluations (eval.json's modification time);
  // evaluations that appear later (a rescan after a job) are checked.
  const bool first = checked_.empty();
  std::vector<const Entry*> readable;
  for (const Entry& e : entries)
    if (e.eval) readable.push_back(&e);
  int defaultChecked = 0;
  if (first) {
    std::vector<const Entry*> byAge = readable;
    std::stable_sort(byAge.begin(), byAge.end(), [](const Entry* a, const Entry* b) {
      return QFileInfo(a->path + "/eval.json").lastModified() > QFileInfo(b->path + "/eval.json").lastModified();
    });
    for (size_t i = 0; i < byAge.size(); ++i) checked_[byAge[i]->path] = i < size_t(kDefaultChecked);
    defaultChecked = std::min<int>(int(byAge.size()), kDefaultChecked);
  }
  for (const Entry* e : readable)
    if (!checked_.count(e->path)) checked_[e->path] = true;
  if (first && int(readable.size()) > kDefaultChecked) {
    listNote_->setText(QString("The newest %1 of %2 are checked.").arg(defaultChecked).arg(readable.size()));
    listNote_->setVisible(true);
  } else if (first) {
    listNote_->setVisible(false);
  }
  // Styles: one per (evaluation, router series), assigned in list order the
  // first time the series is seen, so checking another evaluation never
  // changes the colour of a curve already drawn.
  for (const Entry* e : readable)
    for (const auto& s : e->eval->series) {
      const QString key = e->path + "\n" + s.name;
      if (!styles_.count(key)) styles_[key] = int(styles_.size());
    }
  entries_ = std::move(entries);
  filling_ = true;
  list_->clear();
  for (const Entry& e : entries_) {
    auto* it = new QListWidgetItem(e.eval ? e.name : e.name + " (unreadable)", list_);
    it->setData(Qt::UserRole, e.path);
    if (e.eval) {
      it->setFlags(Qt::ItemIsEnabled | Qt::ItemIsSelectable | Qt::ItemIsUserCheckable);
      it->setCheckState(checked_[e.path] ? Qt::Checked : Qt::Unchecked);
      QStringList routers;
      for (const auto& s : e.eval->series) routers << s.name;
      it->setToolTip(QString("%1\ndata: %2\nrouters: %3").arg(e.path, e.eval->dataCaption, routers.join(", ")));
    } else {
      it->setFlags(Qt::ItemIsEnabled | Qt::ItemIsSelectable);
      it->setForeground(QColor(198, 40, 40));
      it->setToolTip(e.path + "\n" + e.error);
    }
  }
  filling_ = false;
}

void CompareView::redraw() {
  if (!ctx()->hasWorkspace() || entries_.empty()) return;
  const int metric = metric_->currentData().toInt();
  const bool flops = xAxis_->currentData().toInt() == 1;
  const bool speed = speedMetric(metric);
  std::vector<const Entry*> shown;
  for (const Entry& e : entries_)
    if (e.eval && checked_[e.path]) shown.push_back(&e);

  // Which data: the curves are comparable only on the same data.
  std::vector<std::pair<QString, QStringList>> byData;  // caption -> evaluation names
  for (const Entry* e : shown) {
    auto it =
        std::find_if(byData.begin(), byData.end(), [&](const auto& d) { return d.first == e->eval->dataCaption; });
    if (it == byData.end())
      byData.push_back({e->eval->dataCaption, {e->name}});
    else
      it->second << e->name;
  }
  const bool differentData = byData.size() > 1;
  QStringList groups, tips;
  for (const Entry* e : shown) tips << e->name + ": " + e->eval->dataCaption;
  for (const auto& [caption, names] : byData) {
    QString brief;
    for (const Entry* e : shown)
      if (e->eval->dataCaption == caption) brief = e->eval->dataSubtitle;
    groups << names.join(", ") + ": " + brief;
  }
  warning_->setText(differentData
                        ? QString::fromUtf8("\u26a0 The checked evaluations are not on the same data, so their "
                                            "curves are not comparable: ") +
                              groups.join("; ")
                        : QString());
  warning_->setToolTip(tips.join("\n"));
  warning_->setVisible(differentData);

  curves_->clearPlottables();
  curves_->clearItems();
  drawn_.clear();
  omittedX_ = omittedY_ = 0;
  QStringList noTimings;
  double xMax = 0, yMin = 1e300, yMax = -1e300;
  std::vector<double> densePpls;
  for (const Entry* e : shown) {
    const Evaluation& ev = *e->eval;
    if (ev.densePpl > 0 &&
        std::none_of(densePpls.begin(), densePpls.end(), [&](double d) { return std::fabs(d - ev.densePpl) < 1e-9; }))
      densePpls.push_back(ev.densePpl);
    for (const auto& s : ev.series) {
      Curve c;
      c.evaluation = e->name;
      c.dir = e->path;
      c.router = s.name;
      c.style = styles_[e->path + "\n" + s.name];
      std::vector<std::pair<double, Evaluation::Point>> pts;  // (x, point)
      int noY = 0;
      for (const auto& p : s.points) {
        const double x = flops ? p.ffnFlops : p.fraction;
        if (std::isnan(x)) {
          ++omittedX_;
          continue;
        }
        if (std::isnan(metricValue(ev, p, metric))) {
          ++noY;
          continue;
        }
        pts.push_back({x, p});
      }
      omittedY_ += noY;
      if (speed && noY > 0) noTimings << e->name + ": " + s.name;
      if (pts.empty()) continue;
      // QCPGraph keeps its data sorted by key; the error bars index that order.
      std::stable_sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      QVector<double> x, y, errLow, errHigh;
      bool spread = false;
      for (const auto& [px, p] : pts) {
        const double v = metricValue(ev, p, metric);
        x << px, y << v;
        c.points.push_back(p);
        xMax = std::max(xMax, px);
        yMin = std::min(yMin, v), yMax = std::max(yMax, v);
        if (speed) {
          const bool gen = metric == GenerateSpeedup;
          const double lo = gen ? p.genSpeedupMin : p.fwdSpeedupMin, hi = gen ? p.genSpeedupMax : p.fwdSpeedupMax;
          errLow << (std::isnan(lo) ? 0.0 : std::max(0.0, v - lo));
          errHigh << (std::isnan(hi) ? 0.0 : std::max(0.0, hi - v));
          spread |= !std::isnan(lo) && !std::isnan(hi);
          if (!std::isnan(lo)) yMin = std::min(yMin, lo);
          if (!std::isnan(hi)) yMax = std::max(yMax, hi);
        }
      }
      const QColor colour = seriesColor(c.style);
      auto* g = curves_->addGraph();
      g->setData(x, y, true);
      g->setPen(QPen(colour, 2, seriesDash(c.style)));
      g->setScatterStyle(QCPScatterStyle(markerOf(c.style), 6));
      g->setName(e->name + ": " + s.name);
      c.graph = g;
      if (speed && spread) {
        auto* bars = new QCPErrorBars(curves_->xAxis, curves_->yAxis);
        bars->removeFromLegend();
        bars->setDataPlottable(g);
        bars->setData(errLow, errHigh);
        bars->setPen(QPen(colour, 1));
        bars->setWhiskerWidth(6);
        bars->setName(g->name() + " (min-max)");
        c.bars = bars;
      }
      drawn_.push_back(std::move(c));
    }
  }
  // Dense: 1 for the ratios and top-1 (dashed line), each evaluation's own
  // dense perplexity (dotted), 0 for KL (the axis floor).
  const bool ratio = metric == PerplexityRatio || metric == Top1 || speed;
  auto hline = [this](double y, Qt::PenStyle style) {
    auto* line = new QCPItemStraightLine(curves_);
    line->point1->setCoords(0, y);
    line->point2->setCoords(1, y);
    line->setPen(QPen(QColor(120, 120, 120), 1, style));
  };
  if (ratio) {
    hline(1.0, Qt::DashLine);
    yMin = std::min(yMin, 1.0), yMax = std::max(yMax, 1.0);
  }
  if (metric == Perplexity)
    for (double d : densePpls) {
      hline(d, Qt::DotLine);
      yMin = std::min(yMin, d), yMax = std::max(yMax, d);
    }
  if (drawn_.empty()) {
    addPlotNote(curves_,
                shown.empty() ? QString("check evaluations in the list to compare them")
                : flops       ? QString("no result of the checked evaluations has a measured\nFFN FLOP "
                                              "fraction (ffn_flops_fraction)")
                              : QString("no result of the checked evaluations has this metric"),
                9);
    yMin = 0, yMax = 1;
  }
  curves_->xAxis->setLabel(flops ? "FFN FLOPs / dense (measured)" : "active fraction of FFN experts (k / E)");
  curves_->xAxis->setRange(0, std::max(1.0, xMax) * 1.05);
  static const char* yLabels[] = {"dense perplexity / MoE perplexity",
                                  "perplexity (log)",
                                  "top-1 agreement with dense",
                                  "KL(dense || MoE), nats per token",
                                  "forward speed-up over dense (bars min-max)",
                                  "generation speed-up over dense (bars min-max)"};
  curves_->yAxis->setLabel(yLabels[std::clamp(metric, 0, 5)]);
  if (metric == Perplexity) {
    curves_->yAxis->setScaleType(QCPAxis::stLogarithmic);
    if (yMin > 0 && yMax / yMin >= 10) {
      QSharedPointer<QCPAxisTickerLog> t(new QCPAxisTickerLog);
      t->setSubTickCount(8);
      curves_->yAxis->setTicker(t);
    } else {
      curves_->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    }
    curves_->yAxis->setNumberFormat("g");
    curves_->yAxis->setRange(std::max(1e-9, yMin / 1.08), std::max(yMin * 1.1, yMax * 1.08));
  } else {
    curves_->yAxis->setScaleType(QCPAxis::stLinear);
    curves_->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    curves_->yAxis->setNumberFormat("gb");
    if (metric == Kl) yMin = std::min(yMin, 0.0);
    const double pad = (yMax - yMin) * 0.08 + 1e-6;
    const bool floorZero = metric == PerplexityRatio || metric == Top1 || metric == Kl || speed;
    curves_->yAxis->setRange(floorZero ? std::max(0.0, yMin - pad) : yMin - pad, yMax + pad);
  }
  curves_->legend->setVisible(!drawn_.empty());
  // Beyond eight curves the legend takes two columns (rows filled first).
  curves_->legend->setWrap(drawn_.size() > 8 ? int(drawn_.size() + 1) / 2 : 0);
  curves_->legend->setFillOrder(QCPLayoutGrid::foRowsFirst, true);
  // Quality falls, speed rises with fewer experts: the legend goes where the curves are not.
  const bool rising = metric == Perplexity || metric == Kl;
  curves_->axisRect()->insetLayout()->setInsetAlignment(
      0, rising || speed ? Qt::AlignTop | Qt::AlignRight : Qt::AlignBottom | Qt::AlignRight);

  // The caption: which data, and what was left out.
  QStringList caption;
  if (shown.empty())
    caption << "no evaluation checked";
  else if (differentData)
    caption << "not on the same data: " + groups.join("; ");
  else
    caption << "data: " + shown.front()->eval->dataSubtitle;
  if (omittedX_ > 0)
    caption << QString("%1 result%2 without a measured FFN FLOP fraction left out")
                   .arg(omittedX_)
                   .arg(omittedX_ == 1 ? "" : "s");
  if (omittedY_ > 0)
    caption
        << (speed ? QString("no timings (left out): %1").arg(noTimings.join(", "))
                  : QString("%1 result%2 without this metric left out").arg(omittedY_).arg(omittedY_ == 1 ? "" : "s"));
  curveCaptionText_ = caption.join("; ");
  curveCaption_->setTextColor(differentData ? QColor(176, 96, 0) : QColor(70, 70, 70));
  curves_->setToolTip(QString());  // the hover text names points; the data is in the list's tooltips

  // The numbers of every checked result.
  table_->setSortingEnabled(false);
  table_->setRowCount(0);
  auto cell = [](const QString& text, double value, const QString& tip = {}) {
    auto* it = new NumberItem(text);
    if (!std::isnan(value)) it->setData(Qt::UserRole, value);
    it->setToolTip(tip.isEmpty() ? text : tip);
    return it;
  };
  for (const Entry* e : shown) {
    const Evaluation& ev = *e->eval;
    for (const auto& s : ev.series)
      for (const auto& p : s.points) {
        const int r = table_->rowCount();
        table_->insertRow(r);
        table_->setItem(r, 0, cell(e->name, kNan, e->path + "\ndata: " + ev.dataCaption));
        table_->setItem(r, 1, cell(s.name, kNan, p.speedNote.isEmpty() ? s.name : s.name + "\n" + p.speedNote));
        table_->setItem(r, 2, cell(fixedText(p.fraction, 4), p.fraction));
        table_->setItem(r, 3, cell(fixedText(p.ffnFlops, 4), p.ffnFlops));
        table_->setItem(r, 4, cell(fixedText(p.ppl, 2), p.ppl));
        const double ratioValue = metricValue(ev, p, PerplexityRatio);
        table_->setItem(r, 5, cell(fixedText(ratioValue, 4), ratioValue));
        table_->setItem(r, 6, cell(fixedText(p.top1, 4), p.top1));
        table_->setItem(r, 7, cell(fixedText(p.kl, 4), p.kl));
        // The median in the cell (the columns are narrow at 1366x768); the
        // spread and run count in its tooltip and the CSV.
        auto speedCell = [&](double med, double lo, double hi, int runs) {
          const QString full = speedText(med, lo, hi, runs);
          return cell(std::isnan(med) ? QString("-") : QString::number(med, 'f', 2), med,
                      p.speedNote.isEmpty() ? "median [min-max] (runs): " + full : p.speedNote);
        };
        table_->setItem(r, 8, speedCell(p.fwdSpeedup, p.fwdSpeedupMin, p.fwdSpeedupMax, p.fwdRuns));
        table_->setItem(r, 9, speedCell(p.genSpeedup, p.genSpeedupMin, p.genSpeedupMax, p.genRuns));
      }
  }
  table_->setSortingEnabled(true);

  drawHeatmap(shown);
  layoutCaptions();
  curves_->replot();
  heat_->replot();
}

void CompareView::drawHeatmap(const std::vector<const Entry*>& shown) {
  heatRows_.clear();
  heatColumns_.clear();
  heat_->clearItems();
  heatTexts_.clear();
  heatTextsShown_ = false;
  int columns = 0;
  const Evaluation* named = nullptr;  // the evaluation whose site names label the columns
  for (const Entry* e : shown)
    for (const auto& s : e->eval->series)
      for (const auto& p : s.points) {
        if (std::none_of(p.layerRelError.begin(), p.layerRelError.end(), [](double v) { return !std::isnan(v); }))
          continue;
        heatRows_.push_back({e->name, s.name, p.fraction, p.layerRelError, e->eval->siteNames});
        columns = std::max(columns, int(p.layerRelError.size()));
        if (!named || e->eval->siteNames.size() > named->siteNames.size()) named = e->eval.get();
      }
  const int rows = int(heatRows_.size());
  heatMap_->setVisible(rows > 0);
  heatScale_->setVisible(rows > 0);
  if (rows == 0) {
    heatCaptionText_ = shown.empty() ? QString() : QString("no checked result records layer_rel_error");
    addPlotNote(
        heat_,
        shown.empty() ? QString("no evaluation checked") : QString("no per-site error in the checked evaluations"), 9);
    for (QCPAxis* a : {heat_->xAxis, heat_->yAxis}) {
      a->setTicker(QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText));
      a->setRange(0, 1);
    }
    heat_->xAxis->setLabel(QString());
    return;
  }
  for (int c = 0; c < columns; ++c)
    heatColumns_ << (named && c < named->siteNames.size() ? named->siteNames[c] : QString("site %1").arg(c));
  QCPColorMapData* d = heatMap_->data();
  d->setSize(columns, rows);
  // QCPColorMapData's range names the centres of the first and last cells:
  // cell (c, r) is centred on (c, r), under its tick label (a lone cell spans -0.5 .. 0.5).
  auto centres = [](int n) { return n > 1 ? QCPRange(0, n - 1) : QCPRange(-0.5, 0.5); };
  d->setRange(centres(columns), centres(rows));
  double vMax = 0;
  std::vector<double> sum(columns, 0.0);
  std::vector<int> count(columns, 0);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < columns; ++c) {
      const double v = c < int(heatRows_[r].values.size()) ? heatRows_[r].values[c] : kNan;
      d->setCell(c, r, v);
      if (std::isnan(v)) continue;
      vMax = std::max(vMax, v);
      sum[c] += v, ++count[c];
    }
  QCPColorGradient g = gradient(ColorMap::Viridis);
  g.setNanHandling(QCPColorGradient::nhTransparent);  // dense sites: no colour
  heatMap_->setGradient(g);
  heatMap_->setDataRange(QCPRange(0, vMax > 0 ? vMax : 1));
  // Labels: site names below, "evaluation: router @ k/E" on the left (long
  // ones elided in the middle; every n-th when the rows are dense).
  const QFontMetrics fm(heat_->yAxis->tickLabelFont());
  QSharedPointer<QCPAxisTickerText> xt(new QCPAxisTickerText), yt(new QCPAxisTickerText);
  const int xStep = std::max(1, columns / 16);
  for (int c = 0; c < columns; c += xStep) xt->addTick(c, heatColumns_[c]);
  // Every n-th row label, so that labels one text line high never overlap in
  // the axis' pixel height (before the first layout: the widget's height).
  const double axisPx =
      std::max(60, heat_->axisRect()->height() > 0 ? heat_->axisRect()->height() : heat_->height() - 80);
  const int yStep = std::max(1, static_cast<int>(std::ceil(rows * (fm.height() + 1) / axisPx)));
  for (int r = 0; r < rows; r += yStep) {
    const HeatRow& h = heatRows_[r];
    yt->addTick(r, fm.elidedText(QString("%1: %2 @%3").arg(h.evaluation, h.router).arg(h.fraction, 0, 'g', 3),
                                 Qt::ElideMiddle, 120));
  }
  heat_->xAxis->setTicker(xt);
  heat_->yAxis->setTicker(yt);
  heat_->xAxis->setRange(-0.5, columns - 0.5);
  heat_->yAxis->setRange(-0.5, rows - 0.5);
  heat_->xAxis->setLabel("FFN site");
  int worst = -1;
  for (int c = 0; c < columns; ++c)
    if (count[c] > 0 && (worst < 0 || sum[c] / count[c] > sum[worst] / count[worst])) worst = c;
  heatCaptionText_ = worst < 0 ? QString()
                               : QString("most error on average: %1 (mean %2 over %3 result%4)")
                                     .arg(heatColumns_[worst])
                                     .arg(sum[worst] / count[worst], 0, 'g', 3)
                                     .arg(count[worst])
                                     .arg(count[worst] == 1 ? "" : "s");
  placeHeatTexts();
}

bool CompareView::heatCellsHoldText() const {
  const int rows = int(heatRows_.size()), columns = int(heatColumns_.size());
  if (rows == 0 || columns == 0) return false;
  const QRect area = heat_->axisRect()->rect();
  const double cellW = double(area.width()) / columns, cellH = double(area.height()) / rows;
  // A value ("0.42", "0.012") needs about 26 px at 7 pt.
  const QFontMetrics fm(figureFont(7));
  return cellH >= fm.height() + 1 && cellW >= fm.horizontalAdvance("0.000") + 2;
}

void CompareView::placeHeatTexts() {
  for (QCPItemText* t : heatTexts_) heat_->removeItem(t);
  heatTexts_.clear();
  heatTextsShown_ = heatCellsHoldText();
  if (!heatTextsShown_) return;
  const int rows = int(heatRows_.size()), columns = int(heatColumns_.size());
  const QFont font = figureFont(7);
  const double vMax = heatMap_->dataRange().upper;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < columns; ++c) {
      const double v = c < int(heatRows_[r].values.size()) ? heatRows_[r].values[c] : kNan;
      if (std::isnan(v)) continue;
      auto* t = new QCPItemText(heat_);
      t->position->setCoords(c, r);
      t->setPositionAlignment(Qt::AlignCenter);
      t->setFont(font);
      t->setText(v >= 0.1 || v == 0 ? QString::number(v, 'f', 2) : QString::number(v, 'g', 2));
      t->setColor(v >= 0.6 * vMax ? Qt::black : Qt::white);  // dark text on the light end of viridis
      t->setClipToAxisRect(true);
      heatTexts_.push_back(t);
    }
  heat_->replot(QCustomPlot::rpQueuedReplot);
}

void CompareView::layoutCaptions() {
  const std::pair<QCustomPlot*, QCPTextElement*> parts[] = {{curves_, curveCaption_}, {heat_, heatCaption_}};
  for (const auto& [plot, element] : parts) {
    const QString text = plot == curves_ ? curveCaptionText_ : heatCaptionText_;
    // The heatmap's caption shares the width with its colour scale (about 60 px).
    const int width = std::max(120, plot->width() - (plot == heat_ ? 76 : 16));
    QStringList lines;
    for (const QString& line : text.split("; ")) lines << wrapToWidth(line, element->font(), width);
    const QString wrapped = lines.join('\n');
    if (wrapped != element->text()) {
      element->setText(wrapped);
      plot->replot(QCustomPlot::rpQueuedReplot);
    }
  }
}

QString CompareView::hoverText(QCustomPlot* plot, const QPointF& pixel) const {
  if (plot == heat_) {
    const int rows = int(heatRows_.size()), columns = int(heatColumns_.size());
    if (rows == 0 || !heat_->axisRect()->rect().contains(pixel.toPoint())) return {};
    const int c = int(std::lround(heat_->xAxis->pixelToCoord(pixel.x())));
    const int r = int(std::lround(heat_->yAxis->pixelToCoord(pixel.y())));
    if (r < 0 || c < 0 || r >= rows || c >= columns) return {};
    const HeatRow& h = heatRows_[r];
    const QString site = c < h.sites.size() ? h.sites[c] : heatColumns_[c];
    const double v = c < int(h.values.size()) ? h.values[c] : kNan;
    return QString("%1: %2 @ k/E %3\n%4: %5")
        .arg(h.evaluation, h.router)
        .arg(h.fraction, 0, 'g', 4)
        .arg(site)
        .arg(std::isnan(v) ? QString("dense (no error recorded)") : "layer_rel_error " + QString::number(v, 'g', 6));
  }
  if (plot != curves_ || !curves_->axisRect()->rect().contains(pixel.toPoint())) return {};
  const int metric = metric_->currentData().toInt();
  const Curve* best = nullptr;
  int bestIndex = -1;
  double bestDist = 12;  // px
  for (const Curve& c : drawn_) {
    const auto data = c.graph->data();
    for (int i = 0; i < data->size(); ++i) {
      const auto it = data->at(i);
      const double dx = curves_->xAxis->coordToPixel(it->key) - pixel.x();
      const double dy = curves_->yAxis->coordToPixel(it->value) - pixel.y();
      const double dist = std::hypot(dx, dy);
      if (dist <= bestDist) bestDist = dist, best = &c, bestIndex = i;
    }
  }
  if (!best || bestIndex >= int(best->points.size())) return {};
  const Evaluation::Point& p = best->points[size_t(bestIndex)];
  QString text = QString("%1: %2\nk/E %3, FFN FLOPs %4\n%5: %6")
                     .arg(best->evaluation, best->router)
                     .arg(p.fraction, 0, 'g', 4)
                     .arg(std::isnan(p.ffnFlops) ? QString("not recorded") : QString::number(p.ffnFlops, 'g', 4))
                     .arg(metric_->currentText())
                     .arg(best->graph->data()->at(bestIndex)->value, 0, 'g', 5);
  if (speedMetric(metric)) {
    const bool gen = metric == GenerateSpeedup;
    const double lo = gen ? p.genSpeedupMin : p.fwdSpeedupMin, hi = gen ? p.genSpeedupMax : p.fwdSpeedupMax;
    const int runs = gen ? p.genRuns : p.fwdRuns;
    if (!std::isnan(lo) && !std::isnan(hi))
      text += QString("\nspread min-max %1-%2").arg(lo, 0, 'g', 4).arg(hi, 0, 'g', 4);
    if (runs > 0) text += QString(" (%1 runs)").arg(runs);
  }
  return text;
}

QString CompareView::csvData() const {
  QString out =
      "evaluation,router,fraction,ffn_flops_fraction,perplexity,dense_over_perplexity,top1_agreement,kl,"
      "forward_speedup,forward_speedup_min,forward_speedup_max,forward_runs,generate_speedup,generate_speedup_min,"
      "generate_speedup_max,generate_runs\n";
  std::vector<const Entry*> shown;
  for (const Entry& e : entries_) {
    auto it = checked_.find(e.path);
    if (e.eval && it != checked_.end() && it->second) shown.push_back(&e);
  }
  auto quoted = [](const QString& s) {
    return s.contains(',') || s.contains('"') ? "\"" + QString(s).replace("\"", "\"\"") + "\"" : s;
  };
  for (const Entry* e : shown) {
    const Evaluation& ev = *e->eval;
    for (const auto& s : ev.series)
      for (const auto& p : s.points)
        out += QStringList{quoted(e->name),        quoted(s.name),
                           exact(p.fraction),      exact(p.ffnFlops),
                           exact(p.ppl),           exact(metricValue(ev, p, PerplexityRatio)),
                           exact(p.top1),          exact(p.kl),
                           exact(p.fwdSpeedup),    exact(p.fwdSpeedupMin),
                           exact(p.fwdSpeedupMax), QString::number(p.fwdRuns),
                           exact(p.genSpeedup),    exact(p.genSpeedupMin),
                           exact(p.genSpeedupMax), QString::number(p.genRuns)}
                   .join(',') +
               "\n";
  }
  out += "\nevaluation,router,fraction,layer,layer_rel_error\n";
  for (const Entry* e : shown)
    for (const auto& s : e->eval->series)
      for (const auto& p : s.points)
        for (size_t L = 0; L < p.layerRelError.size(); ++L)
          out += QStringList{quoted(e->name), quoted(s.name), exact(p.fraction),
                             L < size_t(e->eval->siteNames.size()) ? e->eval->siteNames[int(L)]
                                                                   : QString("site %1").arg(L),
                             exact(p.layerRelError[L])}
                     .join(',') +
                 "\n";
  return out;
}

}  // namespace moefy::views
