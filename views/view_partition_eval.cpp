#include "views/qcp.h"

#include <QAction>
#include <QCheckBox>
#include <QHeaderView>
#include <QSplitter>
#include <QVBoxLayout>
#include <cmath>
#include <tuple>

#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

namespace {
void addTitle(QCustomPlot* p, const QString& title) {
  p->plotLayout()->insertRow(0);
  auto* t = new QCPTextElement(p, title, QFont(figureFont(11).family(), 11, QFont::Bold));
  p->plotLayout()->addElement(0, 0, t);
}
QString num(double v, int prec = 3) {
  if (std::isnan(v)) return QString("-");
  // Large counts (edge cut) as grouped integers, not "3168975760.000".
  if (std::fabs(v) >= 1000) return QString("%L1").arg(v, 0, 'f', 0);
  return QString::number(v, 'f', prec);
}
/// Shows its text, sorts by the number in Qt::UserRole (when both have one).
class NumberItem : public QTableWidgetItem {
 public:
  using QTableWidgetItem::QTableWidgetItem;
  bool operator<(const QTableWidgetItem& other) const override {
    QVariant a = data(Qt::UserRole), b = other.data(Qt::UserRole);
    if (a.isValid() && b.isValid()) return a.toDouble() < b.toDouble();
    return QTableWidgetItem::operator<(other);
  }
};
}  // namespace

// ------------------------------------------------------------ PartitionView

PartitionView::PartitionView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Partitions", PickLayer, parent) {
  meanLayers_ = new QCheckBox("Mean over layers", optionsBar());
  optionsBar()->addWidget(meanLayers_);
  connect(meanLayers_, &QCheckBox::toggled, this, [this] { refresh(); });
  optionsBar()->addWidget(new QLabel("  x axis: ", optionsBar()));
  recallAxis_ = new QComboBox(optionsBar());
  recallAxis_->setObjectName("recallAxis");
  // Active fraction first: partitions with different expert counts are only
  // comparable at equal compute (k/E), not at equal k.
  recallAxis_->addItem("active fraction (k / E)", 0);
  recallAxis_->addItem("experts run (k)", 1);
  recallAxis_->setToolTip(
      "Plot recall against the share of experts run per token (comparable across expert counts) "
      "or against the absolute number of experts run");
  optionsBar()->addWidget(recallAxis_);
  connect(recallAxis_, &QComboBox::currentIndexChanged, this, [this] { refresh(); });
  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  auto* split = new QSplitter(Qt::Vertical, body());
  table_ = new QTableWidget(split);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->verticalHeader()->setVisible(false);
  table_->setSortingEnabled(true);
  plot_ = new QCustomPlot(split);
  plot_->setMinimumHeight(180);
  addTitle(plot_, "Oracle recall@k");
  applyPublicationStyle(plot_);
  split->addWidget(table_);
  split->addWidget(plot_);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 2);
  lay->addWidget(split);
  refresh();
}

QWidget* PartitionView::figureRoot() { return plot_; }

QString PartitionView::csvData() const {
  QString out;
  QStringList head;
  for (int c = 0; c < table_->columnCount(); ++c) head << table_->horizontalHeaderItem(c)->text();
  out += head.join(',') + "\n";
  for (int r = 0; r < table_->rowCount(); ++r) {
    QStringList row;
    for (int c = 0; c < table_->columnCount(); ++c) {
      const QTableWidgetItem* it = table_->item(r, c);
      // Numbers unformatted (the table groups thousands with the locale's separator).
      row << (!it ? QString() : it->data(Qt::UserRole).isValid() ? QString::number(it->data(Qt::UserRole).toDouble(), 'g', 10) : it->text());
    }
    out += row.join(',') + "\n";
  }
  out += "\npartition,k,fraction,recall\n";
  for (int g = 0; g < plot_->graphCount(); ++g) {
    const QCPGraph* graph = plot_->graph(g);
    const int E = graph->property("experts").toInt();
    const bool frac = recallAxis_->currentData().toInt() == 0;
    for (auto it = graph->data()->begin(); it != graph->data()->end(); ++it) {
      const int k = frac ? int(std::lround(it->key * E)) : int(std::lround(it->key));
      out += QString("%1,%2,%3,%4\n")
                 .arg(graph->name())
                 .arg(k)
                 .arg(double(k) / std::max(1, E), 0, 'g', 8)
                 .arg(it->value, 0, 'g', 8);
    }
  }
  return out;
}

void PartitionView::refresh() {
  std::vector<std::shared_ptr<Partition>> parts;
  if (ctx()->hasWorkspace())
    for (const QString& p : ctx()->paths("partition"))
      if (auto part = ctx()->partition(p)) parts.push_back(part);
  if (parts.empty()) {
    setLayers({});
    setEmptyState(ctx()->hasWorkspace() ? "No partitions yet.\n\nSplit a recording into experts with Pipeline > Split into experts... "
                                          "(co-activation + METIS, balanced k-means, or random) to compare methods here."
                                        : "No workspace open.");
    return;
  }
  setEmptyState("");
  std::vector<int> layers;
  std::vector<Site> sites;  // the partition's own site list (enc.blk / dec.blk for T5)
  for (const auto& [L, v] : parts.front()->labels) {
    layers.push_back(L);
    sites.push_back(parts.front()->siteOf(L));
  }
  setLayers(layers, sites);
  const int L = layer();
  const bool mean = meanLayers_->isChecked();
  auto metric = [&](const Partition& p, const std::string& key) {
    if (!mean) return p.metric(L, key);
    double s = 0;
    int n = 0;
    for (const auto& [l, v] : p.labels) {
      double m = p.metric(l, key);
      if (!std::isnan(m)) s += m, ++n;
    }
    return n ? s / n : std::nan("");
  };
  auto recall = [&](const Partition& p) {
    if (!mean) return p.recallAtK(L);
    std::vector<double> acc;
    int n = 0;
    for (const auto& [l, v] : p.labels) {
      auto r = p.recallAtK(l);
      if (r.empty()) continue;
      if (acc.empty()) acc.assign(r.size(), 0.0);
      for (size_t i = 0; i < std::min(acc.size(), r.size()); ++i) acc[i] += r[i];
      ++n;
    }
    for (double& a : acc) a /= std::max(1, n);
    return acc;
  };
  table_->setSortingEnabled(false);
  table_->clear();
  QStringList head{"partition", "method", "seed", "experts", "coact inside", "edge cut", "balance", "recall@1", "recall@k/4", "recall@k/2"};
  table_->setColumnCount(head.size());
  table_->setHorizontalHeaderLabels(head);
  table_->setRowCount(static_cast<int>(parts.size()));
  plot_->clearGraphs();
  int row = 0;
  double kmax = 1;
  const bool fractionAxis = recallAxis_->currentData().toInt() == 0;
  // Each partition keeps its colour while others come and go: a slot is given
  // on first sight (the lowest free one) and freed only when the artefact is gone.
  for (auto it = colourSlot_.begin(); it != colourSlot_.end();) {
    bool present = false;
    for (const auto& p : parts) present |= p->dir == it->first;
    it = present ? std::next(it) : colourSlot_.erase(it);
  }
  for (const auto& p : parts) {
    if (colourSlot_.count(p->dir)) continue;
    auto taken = [this](int slot) {
      for (const auto& [dir, s] : colourSlot_)
        if (s == slot) return true;
      return false;
    };
    int slot = 0;
    while (taken(slot)) ++slot;
    colourSlot_[p->dir] = slot;
  }
  for (const auto& p : parts) {
    auto rec = recall(*p);
    auto at = [&](size_t k) { return k >= 1 && k <= rec.size() ? rec[k - 1] : std::nan(""); };
    QStringList vals{p->name, p->method, QString::number(p->seed), QString::number(p->experts),
                     num(metric(*p, "coact_inside")), num(metric(*p, "edge_cut")), num(metric(*p, "balance")),
                     num(at(1)), num(at(std::max<size_t>(1, p->experts / 4))), num(at(std::max<size_t>(1, p->experts / 2)))};
    const double raw[] = {0, 0, double(p->seed), double(p->experts), metric(*p, "coact_inside"), metric(*p, "edge_cut"),
                          metric(*p, "balance"), at(1), at(std::max<size_t>(1, p->experts / 4)), at(std::max<size_t>(1, p->experts / 2))};
    for (int c = 0; c < vals.size(); ++c) {
      auto* it = new NumberItem(vals[c]);
      if (c >= 2 && !std::isnan(raw[c])) {
        it->setData(Qt::UserRole, raw[c]);
        it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
      }
      table_->setItem(row, c, it);
    }
    ++row;
    if (!rec.empty()) {
      QVector<double> x, y;
      const double E = std::max(1, p->experts);
      for (size_t k = 0; k < rec.size(); ++k) x << (fractionAxis ? double(k + 1) / E : double(k + 1)), y << rec[k];
      auto* g = plot_->addGraph();
      g->setData(x, y);
      g->setProperty("experts", p->experts);
      g->setProperty("artefact", p->dir);
      const int i = colourSlot_[p->dir];
      g->setPen(QPen(seriesColor(i), 2, seriesDash(i)));
      g->setScatterStyle(QCPScatterStyle(static_cast<QCPScatterStyle::ScatterShape>(QCPScatterStyle::ssCircle + (i % 6)), 5));
      g->setName(p->name);
      kmax = std::max(kmax, double(rec.size()));
    }
  }
  table_->setSortingEnabled(true);
  table_->resizeColumnsToContents();
  plot_->yAxis->setLabel(
      mean ? "share of activation mass kept (mean over layers)"
           : QString("share of activation mass kept (%1)").arg(siteText(parts.front()->siteOf(L), L)));
  if (fractionAxis) {
    plot_->xAxis->setLabel("active fraction of experts per token (k / E)");
    plot_->xAxis->setRange(0, 1.02);
    plot_->xAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
  } else {
    plot_->xAxis->setLabel("experts run per token (k)");
    plot_->xAxis->setRange(0.5, kmax + 0.5);
    QSharedPointer<QCPAxisTickerFixed> t(new QCPAxisTickerFixed);
    t->setTickStep(kmax <= 20 ? 1.0 : kmax <= 64 ? 4.0 : 16.0);
    t->setScaleStrategy(QCPAxisTickerFixed::ssNone);
    plot_->xAxis->setTicker(t);
  }
  plot_->yAxis->setRange(0, 1.02);
  plot_->legend->setVisible(true);
  plot_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignBottom | Qt::AlignRight);
  plot_->replot();
}

// ------------------------------------------------------------ EvalView

EvalView::EvalView(StudioContext* ctx, QWidget* parent) : FigureView(ctx, "Evaluation", PickEvaluation, parent) {
  optionsBar()->addWidget(new QLabel(" Quality: ", optionsBar()));
  qualityMetric_ = new QComboBox(optionsBar());
  qualityMetric_->addItems({"perplexity ratio (dense / MoE)", "top-1 agreement with dense", "KL(dense || MoE)", "loss increase"});
  optionsBar()->addWidget(qualityMetric_);
  optionsBar()->addWidget(new QLabel("  Speed: ", optionsBar()));
  speedMetric_ = new QComboBox(optionsBar());
  speedMetric_->addItems({"forward pass", "generation"});
  optionsBar()->addWidget(speedMetric_);
  for (QComboBox* c : {qualityMetric_, speedMetric_}) connect(c, &QComboBox::currentIndexChanged, this, [this] { refresh(); });
  // A router evaluated on documents its recording read flatters itself: the
  // badge says so, its tooltip names the recordings and why.
  overlapBadge_ = new QLabel(optionsBar());
  overlapBadge_->setObjectName("overlapBadge");
  overlapBadgeAction_ = optionsBar()->addWidget(overlapBadge_);  // shown and hidden through its action
  overlapBadgeAction_->setVisible(false);
  auto* lay = new QHBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  quality_ = new QCustomPlot(body());
  speed_ = new QCustomPlot(body());
  addTitle(quality_, "Quality vs active experts");
  addTitle(speed_, "Speed vs active experts");
  // Series without timings, named under the speed plot's title.
  speed_->plotLayout()->insertRow(1);
  speedNote_ = new QCPTextElement(speed_, QString(), figureFont(8));
  speedNote_->setTextColor(QColor(90, 90, 90));
  speed_->plotLayout()->addElement(1, 0, speedNote_);
  // Which data each figure is on, under its title (and in every export).
  for (int i = 0; i < 2; ++i) {
    QCustomPlot* p = i == 0 ? quality_ : speed_;
    p->plotLayout()->insertRow(1);
    dataCaption_[i] = new QCPTextElement(p, QString(), figureFont(8));
    dataCaption_[i]->setTextColor(QColor(70, 70, 70));
    p->plotLayout()->addElement(1, 0, dataCaption_[i]);
  }
  for (QCustomPlot* p : {quality_, speed_}) {
    applyPublicationStyle(p);
    p->setMinimumSize(260, 200);
    lay->addWidget(p);
  }
  refresh();
}

namespace {
double qualityOf(const Evaluation& e, const Evaluation::Point& p, int metric) {
  switch (metric) {
    case 0: return e.densePpl > 0 && p.ppl > 0 ? e.densePpl / p.ppl : std::nan("");
    case 1: return p.top1;
    case 2: return p.kl;
    default: return p.lossDelta;
  }
}
}  // namespace

void EvalView::refresh() {
  eval_ = ctx()->hasWorkspace() ? ctx()->evaluation(picked("evaluation")) : nullptr;
  overlapBadgeAction_->setVisible(false);
  if (!eval_ || eval_->series.empty()) {
    setEmptyState(!ctx()->hasWorkspace() ? "No workspace open."
                  : eval_ ? "This evaluation holds no results."
                          : "No evaluation yet.\n\nRun Pipeline > Evaluate... to measure quality (and, with --speed, "
                            "speed) of the MoEfied model against the dense one over a sweep of active-expert fractions.");
    return;
  }
  setEmptyState("");
  for (QCPTextElement* c : dataCaption_) c->setText("data: " + eval_->dataSubtitle);
  for (QCustomPlot* p : {quality_, speed_}) p->setToolTip("data: " + eval_->dataCaption);
  {
    const bool overlap = !eval_->overlaps.isEmpty(), maybe = !eval_->possibleOverlaps.isEmpty();
    overlapBadge_->setText(overlap ? QString::fromUtf8("  \u26a0 evaluated on its training data  ")
                                   : QString::fromUtf8("  \u26a0 may overlap its training data  "));
    overlapBadge_->setStyleSheet(overlap ? "QLabel { background: #c62828; color: white; border-radius: 3px; }"
                                         : "QLabel { background: #f9a825; color: black; border-radius: 3px; }");
    overlapBadge_->setToolTip((eval_->overlaps + eval_->possibleOverlaps).join("\n"));
    overlapBadgeAction_->setVisible(overlap || maybe);
  }
  const int qm = qualityMetric_->currentIndex();
  const bool gen = speedMetric_->currentIndex() == 1;
  quality_->clearGraphs();
  quality_->clearItems();
  speed_->clearPlottables();  // graphs and their error bars
  speed_->clearItems();
  double qmin = 1e300, qmax = -1e300, smax = 1;
  bool anySpeed = false;
  int minRuns = 0, maxRuns = 0;  // timed runs behind the speed points shown
  QStringList noSpeed;           // series without timings, with the reason the file gives
  for (size_t i = 0; i < eval_->series.size(); ++i) {
    const auto& s = eval_->series[i];
    QVector<double> x, q, xs, sp, errLow, errHigh;
    QString note;
    bool spread = false;
    for (const auto& p : s.points) {
      double v = qualityOf(*eval_, p, qm);
      if (!std::isnan(v)) x << p.fraction, q << v, qmin = std::min(qmin, v), qmax = std::max(qmax, v);
      const double sv = gen ? p.genSpeedup : p.fwdSpeedup;
      const double lo = gen ? p.genSpeedupMin : p.fwdSpeedupMin, hi = gen ? p.genSpeedupMax : p.fwdSpeedupMax;
      const int runs = gen ? p.genRuns : p.fwdRuns;
      if (!p.speedNote.isEmpty()) note = p.speedNote;
      if (std::isnan(sv)) continue;
      xs << p.fraction, sp << sv, anySpeed = true;
      smax = std::max(smax, std::isnan(hi) ? sv : std::max(sv, hi));
      errLow << (std::isnan(lo) ? 0.0 : std::max(0.0, sv - lo));
      errHigh << (std::isnan(hi) ? 0.0 : std::max(0.0, hi - sv));
      spread |= !std::isnan(lo) && !std::isnan(hi);
      if (runs > 0) minRuns = minRuns ? std::min(minRuns, runs) : runs, maxRuns = std::max(maxRuns, runs);
    }
    const QPen pen(seriesColor(int(i)), 2, seriesDash(int(i)));
    const QCPScatterStyle marker(static_cast<QCPScatterStyle::ScatterShape>(QCPScatterStyle::ssCircle + (i % 6)), 6);
    auto* g = quality_->addGraph();
    g->setData(x, q);
    g->setPen(pen);
    g->setScatterStyle(marker);
    g->setName(s.name);
    // A series without timings (an oracle router needs the dense hidden, so it
    // has no speed) gets no speed curve rather than an empty legend entry.
    if (xs.isEmpty()) {
      noSpeed << s.name + (note.isEmpty() ? QString(": no timings") : ": " + note);
      continue;
    }
    auto* gs = speed_->addGraph();
    gs->setData(xs, sp);
    gs->setPen(pen);
    gs->setScatterStyle(marker);
    gs->setName(s.name);
    if (spread) {
      auto* bars = new QCPErrorBars(speed_->xAxis, speed_->yAxis);
      bars->removeFromLegend();
      bars->setDataPlottable(gs);
      bars->setData(errLow, errHigh);
      bars->setPen(QPen(seriesColor(int(i)), 1));
      bars->setWhiskerWidth(6);
      bars->setName(s.name + " (min-max)");
    }
  }
  const double ref = (qm == 0 || qm == 1) ? 1.0 : 0.0;  // the dense model's value of the metric
  for (QCustomPlot* p : {quality_, speed_}) {
    auto* line = new QCPItemStraightLine(p);
    double y = p == quality_ ? ref : 1.0;
    line->point1->setCoords(0, y);
    line->point2->setCoords(1, y);
    line->setPen(QPen(QColor(120, 120, 120), 1, Qt::DashLine));
    p->xAxis->setLabel("active fraction of FFN experts (k / E)");
    p->xAxis->setRange(0, 1.05);
    p->legend->setVisible(true);
  }
  static const char* qLabels[] = {"quality: dense perplexity / MoE perplexity", "top-1 agreement with the dense model",
                                  "KL(dense || MoE), nats per token", "loss increase over dense (nats)"};
  QString denseNote = eval_->densePpl > 0 ? QString(" (dense ppl %1)").arg(eval_->densePpl, 0, 'f', 2) : QString();
  quality_->yAxis->setLabel(QString(qLabels[qm]) + (qm == 0 ? denseNote : QString()));
  qmin = std::min(qmin, ref);
  qmax = std::max(qmax, ref);
  double pad = (qmax - qmin) * 0.08 + 1e-6;
  quality_->yAxis->setRange(qm <= 1 ? std::max(0.0, qmin - pad) : qmin - pad, qmax + pad);
  quality_->axisRect()->insetLayout()->setInsetAlignment(0, qm <= 1 ? Qt::AlignBottom | Qt::AlignRight : Qt::AlignTop | Qt::AlignRight);
  QString runs;
  if (maxRuns > 0)
    runs = minRuns == maxRuns ? QString("median of %1 runs, bars min-max").arg(maxRuns)
                              : QString("median of %1-%2 runs, bars min-max").arg(minRuns).arg(maxRuns);
  speed_->yAxis->setLabel((gen ? "generation speed-up over dense" : "forward speed-up over dense") +
                          (runs.isEmpty() ? QString() : "\n(" + runs + ")"));
  speedNote_->setText(noSpeed.join("\n"));
  speedNote_->setVisible(!noSpeed.isEmpty() && anySpeed);
  speed_->yAxis->setRange(0, smax * 1.15);
  speed_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
  if (!anySpeed) {
    auto* t = new QCPItemText(speed_);
    t->position->setType(QCPItemPosition::ptAxisRectRatio);
    t->position->setCoords(0.5, 0.5);
    t->setText(gen ? "no generation timings in this evaluation\n(moefy eval --speed --generate N)"
                   : "no timings in this evaluation\n(run the evaluation with --speed)");
    t->setFont(figureFont(10));
    t->setColor(QColor(90, 90, 90));
    speed_->legend->setVisible(false);
  }
  quality_->replot();
  speed_->replot();
}

QString EvalView::dataCaption(int plot) const {
  if (!eval_ || eval_->series.empty() || plot < 0 || plot > 1) return {};
  return dataCaption_[plot]->text();
}

bool EvalView::overlapBadgeShown() const { return overlapBadgeAction_->isVisible(); }

QString EvalView::csvData() const {
  QString out =
      "router,fraction,top_k,loss,perplexity,loss_delta,top1_agreement,kl,forward_speedup,forward_speedup_min,"
      "forward_speedup_max,forward_runs,generate_speedup,generate_speedup_min,generate_speedup_max,generate_runs\n";
  if (!eval_) return out;
  auto g = [](double v) { return QString::number(v, 'g', 8); };
  for (const auto& s : eval_->series)
    for (const auto& p : s.points)
      out += QStringList{s.name,
                         g(p.fraction),
                         "\"" + p.topK + "\"",
                         g(p.loss),
                         g(p.ppl),
                         g(p.lossDelta),
                         g(p.top1),
                         g(p.kl),
                         g(p.fwdSpeedup),
                         g(p.fwdSpeedupMin),
                         g(p.fwdSpeedupMax),
                         QString::number(p.fwdRuns),
                         g(p.genSpeedup),
                         g(p.genSpeedupMin),
                         g(p.genSpeedupMax),
                         QString::number(p.genRuns)}
                 .join(',') +
             "\n";
  return out;
}

}  // namespace moefy::views
