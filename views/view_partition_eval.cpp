#include "views/qcp.h"

#include <QAction>
#include <QCheckBox>
#include <QHeaderView>
#include <QMouseEvent>
#include <QSplitter>
#include <QToolTip>
#include <QVBoxLayout>
#include <cmath>
#include <tuple>

#include "analysis/eval/front.h"
#include "views/style.h"
#include "views/table_items.h"
#include "views/views.h"

namespace moefy::views {

namespace {
QString num(double v, int prec = 3) {
  if (std::isnan(v)) return QString("-");
  // Large counts (edge cut) as grouped integers, not "3168975760.000".
  if (std::fabs(v) >= 1000) return QString("%L1").arg(v, 0, 'f', 0);
  return QString::number(v, 'f', prec);
}
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
  optionsBar()->addWidget(new QLabel("  Agreement: ", optionsBar()));
  agreementMeasure_ = new QComboBox(optionsBar());
  agreementMeasure_->setObjectName("agreementMeasure");
  agreementMeasure_->addItem("ARI", 0);
  agreementMeasure_->addItem("NMI", 1);
  agreementMeasure_->setToolTip(
      "Pairwise agreement of the partitions' neuron labelings at the picked site: adjusted Rand index "
      "(1 = the same experts, ~0 = unrelated) or normalised mutual information (1 = the same, 0 = independent)");
  optionsBar()->addWidget(agreementMeasure_);
  connect(agreementMeasure_, &QComboBox::currentIndexChanged, this, [this] { drawAgreement(); });
  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  auto* split = new QSplitter(Qt::Vertical, body());
  table_ = new QTableWidget(split);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->verticalHeader()->setVisible(false);
  table_->setSortingEnabled(true);
  // The figure: recall@k curves and, beside them, the agreement heatmap.
  figures_ = new QWidget(split);
  figures_->setObjectName("partitionFigures");
  auto* row = new QHBoxLayout(figures_);
  row->setContentsMargins(0, 0, 0, 0);
  plot_ = new QCustomPlot(figures_);  // the first plot of the figure (tests find it with findChild)
  plot_->setObjectName("partitionRecall");
  plot_->setMinimumHeight(180);
  addTitle(plot_, "Oracle recall@k");
  applyPublicationStyle(plot_);
  agreementPlot_ = new QCustomPlot(figures_);
  agreementPlot_->setObjectName("partitionAgreement");
  agreementPlot_->setMinimumSize(240, 180);
  std::tie(agreementMap_, agreementScale_) = addHeatmap(agreementPlot_);  // whole cells, row 0 at the top
  addTitle(agreementPlot_, "Partition agreement");
  agreementCaption_ = addDataCaption(agreementPlot_);
  applyPublicationStyle(agreementPlot_);
  agreementScale_->axis()->setTickLabelFont(figureFont(8));
  agreementScale_->axis()->setLabelFont(figureFont(9));
  for (QCPAxis* a : {agreementPlot_->xAxis, agreementPlot_->yAxis}) {
    a->grid()->setVisible(false);
    a->setTickLabelFont(figureFont(8));
    a->setSubTicks(false);
  }
  // Names end at their column's tick, slanted, so that long names do not overlap.
  agreementPlot_->xAxis->setTickLabelRotation(-40);
  agreementPlot_->installEventFilter(this);  // re-wraps the caption to the new width
  connect(agreementPlot_, &QCustomPlot::mouseMove, this, &PartitionView::showAgreementTip);
  row->addWidget(plot_, 1);  // each about 400 px wide at 1366x768 with the docks
  row->addWidget(agreementPlot_, 1);
  split->addWidget(table_);
  split->addWidget(figures_);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 2);
  lay->addWidget(split);
  refresh();
}

QWidget* PartitionView::figureRoot() { return figures_; }

bool PartitionView::eventFilter(QObject* watched, QEvent* event) {
  if (event->type() == QEvent::Resize && watched == agreementPlot_) layoutAgreementCaption();
  return FigureView::eventFilter(watched, event);
}

QString PartitionView::csvData() const {
  QString out;
  QStringList head;
  for (int c = 0; c < table_->columnCount(); ++c)
    head << table_->horizontalHeaderItem(c)->data(Qt::UserRole).toString();
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
  // The agreement matrix at the picked site: every ordered pair, diagonal included.
  out += "\nsite,partition_a,partition_b,ari,nmi\n";
  for (int i = 0; i < agreement_.n; ++i)
    for (int j = 0; j < agreement_.n; ++j)
      out += QString("%1,%2,%3,%4,%5\n")
                 .arg(agreementSiteName_, agreementNames_.value(i), agreementNames_.value(j))
                 .arg(agreement_.ariAt(i, j), 0, 'g', 10)
                 .arg(agreement_.nmiAt(i, j), 0, 'g', 10);
  return out;
}

void PartitionView::refresh() {
  std::vector<std::shared_ptr<Partition>> parts;
  if (ctx()->hasWorkspace())
    for (const QString& p : ctx()->paths("partition"))
      if (auto part = ctx()->partition(p)) parts.push_back(part);
  if (parts.empty()) {
    updateAgreement(parts);
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
  // Stability (ARI against a rerun with seed + 1) when a partition has it.
  bool stability = false;
  for (const auto& p : parts) stability |= !std::isnan(metric(*p, "stability_ari"));
  table_->setSortingEnabled(false);
  table_->clear();
  // Columns: the full name (the CSV header, kept in the header item's
  // Qt::UserRole), a short header that fits a 1366 px window without a
  // horizontal scrollbar, and the tooltip that says what it is.
  struct Column {
    const char* name;
    const char* shortName;
    const char* tip;
  };
  std::vector<Column> columns{
      {"partition", "partition", "the partition folder (elided in the middle when narrow; the tooltip has it whole)"},
      {"method", "method", "split method (partition.json method)"},
      {"seed", "seed", "split seed"},
      {"experts", "E", "experts E"},
      {"coact inside", "inside", "coact inside: share of the off-diagonal co-activation mass inside experts"},
      {"edge cut", "cut", "edge cut: co-activation counts of the neuron pairs in different experts"},
      {"balance", "balance", "balance: largest expert size / (d_ff / E) (1 = exactly balanced)"},
      {"recall@1", "R@1", "recall@1: oracle share of the activation mass in the token's best expert"},
      {"recall@k/4", "R@E/4",
       "recall@k at k = E/4: oracle share of the activation mass in the token's E/4 best experts"},
      {"recall@k/2", "R@E/2",
       "recall@k at k = E/2: oracle share of the activation mass in the token's E/2 best experts"}};
  if (stability)
    columns.push_back(
        {"stability (ARI)", "stab. ARI",
         "stability (ARI): adjusted Rand index between the partition and the same method rerun with "
         "seed + 1 (partition.json stability_ari; 1 = the same experts, ~0 = unrelated; - = not measured)"});
  table_->setColumnCount(static_cast<int>(columns.size()));
  for (int c = 0; c < static_cast<int>(columns.size()); ++c) {
    auto* h = new QTableWidgetItem(columns[c].shortName);
    h->setData(Qt::UserRole, QString(columns[c].name));
    h->setToolTip(columns[c].tip);
    table_->setHorizontalHeaderItem(c, h);
  }
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
    std::vector<double> raw{0,
                            0,
                            double(p->seed),
                            double(p->experts),
                            metric(*p, "coact_inside"),
                            metric(*p, "edge_cut"),
                            metric(*p, "balance"),
                            at(1),
                            at(std::max<size_t>(1, p->experts / 4)),
                            at(std::max<size_t>(1, p->experts / 2))};
    if (stability) {
      const double ari = metric(*p, "stability_ari");
      vals << num(ari);
      raw.push_back(ari);
    }
    for (int c = 0; c < vals.size(); ++c) {
      auto* it = new NumberItem(vals[c]);
      if (c == 0) it->setToolTip(p->dir);
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
  // The name column takes what the numbers leave (elided in the middle), so
  // the table fits its width: no horizontal scrollbar at 1366x768.
  table_->setTextElideMode(Qt::ElideMiddle);
  QHeaderView* header = table_->horizontalHeader();
  header->setMinimumSectionSize(24);
  for (int c = 0; c < table_->columnCount(); ++c)
    header->setSectionResizeMode(c, c == 0 ? QHeaderView::Stretch : QHeaderView::ResizeToContents);
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
  updateAgreement(parts);
}

void PartitionView::updateAgreement(const std::vector<std::shared_ptr<Partition>>& parts) {
  // The partitions to compare: those that split the picked site at the first
  // partition's d_ff, of the same model (neuron i is the same neuron in all).
  std::vector<std::shared_ptr<Partition>> compared;
  std::vector<int> at;  // each one's site index of the site
  int leftOut = 0;
  agreementSite_.clear(), agreementSiteName_.clear(), agreementDff_ = 0;
  if (!parts.empty()) {
    const Partition& ref = *parts.front();
    const Site site = ref.siteOf(layer());
    for (const auto& p : parts) {
      int found = -1;
      for (const auto& [l, s] : p->sites)
        if (s == site && p->labels.count(l)) found = l;
      if (found < 0 || p->dFF != ref.dFF || p->fingerprint != ref.fingerprint) {
        ++leftOut;
        continue;
      }
      compared.push_back(p);
      at.push_back(found);
    }
    agreementSite_ = siteText(site, layer());
    agreementSiteName_ = QString::fromStdString(site.name());
    agreementDff_ = ref.dFF;
  }
  agreementLeftOut_ = leftOut;
  if (compared.size() < 2) compared.clear(), at.clear();
  // Recomputed only when the partitions (the context's cached objects) or the site change.
  if (compared != agreementParts_ || (!compared.empty() && agreementSiteName_ != agreementKeySite_)) {
    agreementParts_ = compared;
    agreementKeySite_ = agreementSiteName_;
    agreementNames_.clear();
    std::vector<std::vector<int32_t>> labelings;
    for (size_t i = 0; i < compared.size(); ++i) {
      labelings.push_back(compared[i]->labels.at(at[i]));
      agreementNames_ << compared[i]->name;
    }
    agreement_ = agreementMatrix(labelings);  // the core's ARI and NMI (analysis/split/agreement.h)
  }
  drawAgreement();
}

void PartitionView::drawAgreement() {
  QCustomPlot* p = agreementPlot_;
  p->clearItems();
  const int n = agreement_.n;
  const bool nmi = agreementMeasure_->currentData().toInt() == 1;
  const QString measure = nmi ? "NMI" : "ARI";
  agreementMap_->setVisible(n >= 2);
  agreementScale_->setVisible(n >= 2);
  const QString leftOut = agreementLeftOut_ > 0 ? QString("%1 partition%2 of another site, d_ff or model left out")
                                                      .arg(agreementLeftOut_)
                                                      .arg(agreementLeftOut_ == 1 ? "" : "s")
                                                : QString();
  if (n < 2) {
    agreementCaptionText_ = leftOut;
    addPlotNote(p,
                agreementDff_ == 0 ? QString("no partitions")
                                   : QString("fewer than two partitions split %1\n(d_ff %2): nothing to compare")
                                         .arg(agreementSite_)
                                         .arg(agreementDff_),
                9);
    for (QCPAxis* a : {p->xAxis, p->yAxis}) {
      a->setTicker(QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText));  // no ticks
      a->setRange(0, 1);
    }
    layoutAgreementCaption();
    p->replot();
    return;
  }
  agreementCaptionText_ =
      QString("%1 of the neuron labelings, %2 (d_ff %3)").arg(measure, agreementSite_).arg(agreementDff_);
  if (!leftOut.isEmpty()) agreementCaptionText_ += "\n" + leftOut;
  QCPColorMapData* d = agreementMap_->data();
  d->setSize(n, n);
  // Cell centres at the integers 0..n-1 (QCPColorMapData puts them at the range ends).
  d->setRange(QCPRange(0, n - 1), QCPRange(0, n - 1));
  auto value = [&](int i, int j) { return nmi ? agreement_.nmiAt(i, j) : agreement_.ariAt(i, j); };
  // Values in each cell, as large as the cells allow.
  const QFont font = figureFont(n <= 6 ? 8 : n <= 10 ? 7 : 6);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const double v = value(i, j);
      d->setCell(j, i, v);  // column j, row i
      auto* t = new QCPItemText(p);
      t->position->setCoords(j, i);
      t->setPositionAlignment(Qt::AlignCenter);
      t->setFont(font);
      t->setText(QString::number(std::abs(v) < 0.005 ? 0.0 : v, 'f', 2));  // never "-0.00"
      // Dark text on the light (high) end of viridis, white on the dark end.
      t->setColor(v >= 0.6 ? Qt::black : Qt::white);
    }
  agreementMap_->setGradient(gradient(ColorMap::Viridis));
  // Both measures are 1 for the same partition; ARI is ~0 for unrelated ones
  // and may dip below 0 (drawn in the colour of 0, its value still printed).
  agreementMap_->setDataRange(QCPRange(0, 1));
  agreementScale_->axis()->setLabel(measure);
  // Names on both axes, long ones elided in the middle (where "-s0" and "-s1" differ they stay).
  const QFontMetrics fm(p->xAxis->tickLabelFont());
  for (QCPAxis* a : {p->xAxis, p->yAxis}) {
    QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
    for (int i = 0; i < n; ++i) t->addTick(i, fm.elidedText(agreementNames_[i], Qt::ElideMiddle, 96));
    a->setTicker(t);
    a->setRange(-0.5, n - 0.5);
  }
  layoutAgreementCaption();
  p->replot();
}

void PartitionView::layoutAgreementCaption() {
  // The caption shares the plot's width with the colour scale (about 60 px).
  const int width = std::max(120, agreementPlot_->width() - 76);
  QStringList lines;
  for (const QString& line : agreementCaptionText_.split('\n'))
    lines << wrapToWidth(line, agreementCaption_->font(), width);
  const QString wrapped = lines.join('\n');
  if (wrapped != agreementCaption_->text()) {
    agreementCaption_->setText(wrapped);
    agreementPlot_->replot(QCustomPlot::rpQueuedReplot);
  }
}

void PartitionView::showAgreementTip(QMouseEvent* event) {
  const int n = agreement_.n;
  const QPointF pos = event->position();
  const int j = static_cast<int>(std::lround(agreementPlot_->xAxis->pixelToCoord(pos.x())));
  const int i = static_cast<int>(std::lround(agreementPlot_->yAxis->pixelToCoord(pos.y())));
  if (n < 2 || !agreementPlot_->axisRect()->rect().contains(pos.toPoint()) || i < 0 || j < 0 || i >= n || j >= n) {
    QToolTip::hideText();
    return;
  }
  QToolTip::showText(event->globalPosition().toPoint(),
                     QString("%1\nvs %2\nat %3: ARI %4, NMI %5")
                         .arg(agreementNames_[i], agreementNames_[j], agreementSite_)
                         .arg(agreement_.ariAt(i, j), 0, 'f', 4)
                         .arg(agreement_.nmiAt(i, j), 0, 'f', 4),
                     agreementPlot_);
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
  for (int i = 0; i < 2; ++i) dataCaption_[i] = addDataCaption(i == 0 ? quality_ : speed_);
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
  // QCPTextElement does not wrap: a caption wider than its plot is cut at both edges (at 1366x768).
  for (int i = 0; i < 2; ++i) {
    if (!dataCaption_[i]) continue;
    QCustomPlot* p = i == 0 ? quality_ : speed_;
    dataCaption_[i]->setText(
        wrapToWidth("data: " + eval_->dataSubtitle, dataCaption_[i]->font(), std::max(120, p->width() - 16)));
  }
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
    addPlotNote(speed_, gen ? "no generation timings in this evaluation\n(moefy eval --speed --generate N)"
                            : "no timings in this evaluation\n(run the evaluation with --speed)");
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

// ------------------------------------------------------------ FrontView

namespace {
/// The legend name of a front method: the bound is a reference, named as such.
QString frontSeriesName(const std::string& method) {
  return method == "bound" ? QString("top-k act. bound") : QString::fromStdString(method);
}
}  // namespace

FrontView::FrontView(StudioContext* ctx, QWidget* parent) : FigureView(ctx, "Front", PickFront, parent) {
  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  auto* split = new QSplitter(Qt::Vertical, body());
  split->setChildrenCollapsible(false);
  plots_ = new QWidget(split);
  plots_->setObjectName("frontPlots");
  auto* row = new QHBoxLayout(plots_);
  row->setContentsMargins(0, 0, 0, 0);
  ppl_ = new QCustomPlot(plots_);
  ppl_->setObjectName("frontPerplexity");
  top1_ = new QCustomPlot(plots_);
  top1_->setObjectName("frontTop1");
  addTitle(ppl_, "Held-out perplexity vs FFN FLOPs");
  addTitle(top1_, "Top-1 agreement vs FFN FLOPs");
  // Which data the points are on, under each title (and in every export).
  for (int i = 0; i < 2; ++i) {
    QCustomPlot* p = i == 0 ? ppl_ : top1_;
    caption_[i] = addDataCaption(p);
    applyPublicationStyle(p);
    // Up to six entries inside a plot about 160 px tall at 1366x768: compact.
    p->legend->setFont(figureFont(8));
    p->legend->setIconSize(QSize(22, 10));
    p->legend->setRowSpacing(0);
    p->setMinimumSize(260, 200);
    p->installEventFilter(this);  // re-wraps the caption to the new width
    row->addWidget(p);
  }
  auto* tables = new QSplitter(Qt::Horizontal, split);
  tables->setChildrenCollapsible(false);
  points_ = new QTableWidget(tables);
  points_->setObjectName("frontPoints");
  best_ = new QTableWidget(tables);
  best_->setObjectName("frontBest");
  for (QTableWidget* t : {points_, best_}) {
    t->setEditTriggers(QAbstractItemView::NoEditTriggers);
    t->setSelectionBehavior(QAbstractItemView::SelectRows);
    t->verticalHeader()->setVisible(false);
    t->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    t->setMinimumHeight(90);
  }
  points_->setColumnCount(7);
  points_->setHorizontalHeaderLabels({"method", "budget", "FFN FLOPs", "k/E", "mean k", "perplexity", "top-1"});
  points_->horizontalHeaderItem(2)->setToolTip(
      "measured FFN FLOPs per token / dense (router and shared expert included)");
  points_->horizontalHeaderItem(3)->setToolTip(
      "active routed experts k / E (dynamic-k: its cap; the bound: its share of d_ff)");
  best_->setColumnCount(5);
  best_->setHorizontalHeaderLabels({"budget", "best method", "perplexity", "plain", "vs plain"});
  best_->horizontalHeaderItem(4)->setToolTip("change of held-out perplexity over plain MoEfication at the same budget");
  tables->addWidget(points_);
  tables->addWidget(best_);
  tables->setStretchFactor(0, 3);
  tables->setStretchFactor(1, 2);
  split->addWidget(plots_);
  split->addWidget(tables);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 2);
  lay->addWidget(split);
  refresh();
}

QWidget* FrontView::figureRoot() { return plots_; }

bool FrontView::eventFilter(QObject* watched, QEvent* event) {
  if (event->type() == QEvent::Resize && (watched == ppl_ || watched == top1_)) layoutCaptions();
  return FigureView::eventFilter(watched, event);
}

void FrontView::layoutCaptions() {
  for (int i = 0; i < 2; ++i) {
    QCustomPlot* p = i == 0 ? ppl_ : top1_;
    const QString text = front_ ? "data: " + front_->dataSubtitle : QString();
    // QCPTextElement does not wrap: a caption wider than the plot is cut at
    // its edges (at 1366x768 each plot is about 400 px wide).
    const QString wrapped = wrapToWidth(text, caption_[i]->font(), std::max(120, p->width() - 16));
    if (wrapped != caption_[i]->text()) {
      caption_[i]->setText(wrapped);
      p->replot(QCustomPlot::rpQueuedReplot);
    }
  }
}

QString FrontView::dataCaption() const { return front_ ? "data: " + front_->dataSubtitle : QString(); }

void FrontView::refresh() {
  const QString path = ctx()->hasWorkspace() ? picked("front") : QString();
  front_ = path.isEmpty() ? nullptr : ctx()->front(path);
  error_ = front_ || path.isEmpty() ? QString() : ctx()->loadError(path);
  points_->setRowCount(0);
  best_->setRowCount(0);
  if (!front_) {
    setEmptyState(!ctx()->hasWorkspace() ? "No workspace open."
                  : !error_.isEmpty()
                      ? "Cannot read this front:\n\n" + error_
                      : "No front yet.\n\nRun `moefy front MODEL TRAIN_CORPUS HELDOUT_CORPUS --out "
                        "WORKSPACE/fronts/NAME` (or `moefy demo`) to measure every compute-budget method at the same "
                        "FFN FLOP budgets; its folder appears here.");
    layoutCaptions();
    return;
  }
  setEmptyState("");
  const FrontResult& f = *front_->core;
  for (QCustomPlot* p : {ppl_, top1_}) {
    p->clearGraphs();
    p->clearItems();
    p->setToolTip("data: " + front_->dataCaption + "\n" + front_->dir);
  }
  layoutCaptions();
  double xMax = 0, pMin = f.densePerplexity, pMax = f.densePerplexity, tMin = 1;
  for (size_t i = 0; i < f.methods.size(); ++i) {
    const FrontMethod& m = f.methods[i];
    const bool bound = m.name == "bound";
    QVector<double> x, ppl, top1;
    for (const FrontPoint& pt : m.points) {
      // The bound needs the dense hidden (its own FLOP fraction is above 0.5):
      // it is drawn at its neuron budget, as frontCharts draws it.
      const double px = bound ? pt.fraction : pt.ffnFlopsFraction;
      x << px, ppl << pt.perplexity, top1 << pt.top1Agreement;
      xMax = std::max(xMax, px), pMin = std::min(pMin, pt.perplexity), pMax = std::max(pMax, pt.perplexity);
      tMin = std::min(tMin, pt.top1Agreement);
    }
    // Colours by the method's place in front.json, so a method keeps its colour in both plots.
    const QPen pen = bound ? QPen(Qt::black, 2, Qt::DashLine) : QPen(seriesColor(int(i)), 2, Qt::SolidLine);
    const QCPScatterStyle marker(bound
                                     ? QCPScatterStyle::ssCross
                                     : static_cast<QCPScatterStyle::ScatterShape>(QCPScatterStyle::ssCircle + (i % 6)),
                                 7);
    const QString name = frontSeriesName(m.name) + (m.points.empty() ? " (no point)" : QString());
    for (QCustomPlot* p : {ppl_, top1_}) {
      auto* g = p->addGraph();
      g->setData(x, p == ppl_ ? ppl : top1);
      g->setPen(pen);
      g->setScatterStyle(marker);
      g->setName(name);
      g->setProperty("method", QString::fromStdString(m.name));
    }
  }
  if (xMax <= 0) xMax = 1;
  const double xHi = std::min(1.05, xMax * 1.12 + 0.02);
  // Dense: a horizontal line across the plotted range, in the legend.
  for (QCustomPlot* p : {ppl_, top1_}) {
    auto* g = p->addGraph();
    const double y = p == ppl_ ? f.densePerplexity : 1.0;
    g->setData(QVector<double>{0, xHi}, QVector<double>{y, y});
    g->setPen(QPen(QColor(110, 110, 110), 1.5, Qt::DashDotLine));
    g->setName(p == ppl_ ? QString("dense (%1)").arg(f.densePerplexity, 0, 'f', 1) : QString("dense"));
    g->setProperty("method", "dense");
    p->xAxis->setLabel("FFN FLOPs / dense (router, shared incl.)");
    p->xAxis->setRange(0, xHi);
    p->legend->setVisible(true);
  }
  // Perplexity on a log axis (a method far off at a small budget would
  // flatten the rest); decade ticks only when the range spans one.
  ppl_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  ppl_->yAxis->setNumberFormat("g");
  ppl_->yAxis->setLabel("held-out perplexity (log)");
  ppl_->yAxis->setRange(pMin / 1.08, pMax * 1.08);
  // Ticks that fit the axis whatever the range spans (a linear ticker on this
  // log axis left a 275-430 range with no tick inside it).
  ppl_->yAxis->setTicker(logTicker(ppl_->yAxis->range(),
                                   ppl_->axisRect()->height() > 0 ? ppl_->axisRect()->height() : 200,
                                   QFontMetrics(ppl_->yAxis->tickLabelFont()).height()));
  top1_->yAxis->setLabel("top-1 agreement with dense");
  top1_->yAxis->setRange(std::max(0.0, tMin - (1 - tMin) * 0.1 - 0.02), 1.02);
  // Perplexity falls and agreement rises with FLOPs: the legend goes where the curves are not.
  ppl_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
  top1_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignBottom | Qt::AlignRight);

  // The tables: every method at every budget, then the best per budget.
  auto cell = [](const QString& text, double value, const QString& tip = {}) {
    auto* it = new NumberItem(text);
    if (!std::isnan(value)) it->setData(Qt::UserRole, value);
    if (!tip.isEmpty()) it->setToolTip(tip);
    return it;
  };
  const double nan = std::nan("");
  for (const FrontMethod& m : f.methods) {
    QString tip = QString("router: %1").arg(QString::fromStdString(m.router));
    if (!m.partition.empty()) tip += "\npartition: " + QString::fromStdString(m.partition);
    if (!m.routerDir.empty()) tip += "\nrouter folder: " + QString::fromStdString(m.routerDir);
    if (!m.eval.empty()) tip += "\nevaluation: " + QString::fromStdString(m.eval);
    for (double b : f.budgets) {
      const int r = points_->rowCount();
      points_->insertRow(r);
      points_->setItem(r, 0, cell(frontSeriesName(m.name), nan, tip));
      points_->setItem(r, 1, cell(num(b, 4), b));
      const FrontPoint* pt = FrontResult::pointAt(m, b);
      if (!pt) {
        for (int c = 2; c < 7; ++c) points_->setItem(r, c, cell("-", nan, "no operating point within this budget"));
        continue;
      }
      points_->setItem(r, 2, cell(num(pt->ffnFlopsFraction, 4), pt->ffnFlopsFraction));
      points_->setItem(r, 3, cell(num(pt->fraction, 4), pt->fraction));
      points_->setItem(r, 4, cell(num(pt->meanK, 2), pt->meanK));
      points_->setItem(r, 5, cell(num(pt->perplexity, 2), pt->perplexity));
      points_->setItem(r, 6, cell(num(pt->top1Agreement, 4), pt->top1Agreement));
    }
  }
  for (const FrontBest& b : f.best) {
    const int r = best_->rowCount();
    best_->insertRow(r);
    best_->setItem(r, 0, cell(num(b.budget, 4), b.budget));
    if (b.method.empty()) {
      best_->setItem(r, 1, cell("none reaches it", nan));
      for (int c = 2; c < 5; ++c) best_->setItem(r, c, cell("-", nan));
      continue;
    }
    best_->setItem(r, 1, cell(frontSeriesName(b.method), nan));
    best_->setItem(r, 2, cell(num(b.perplexity, 2), b.perplexity));
    if (b.plainPerplexity > 0) {
      const double change = (b.perplexity / b.plainPerplexity - 1) * 100;
      best_->setItem(r, 3, cell(num(b.plainPerplexity, 2), b.plainPerplexity));
      best_->setItem(r, 4, cell(QString::asprintf("%+.1f %%", change), change));
    } else {
      best_->setItem(r, 3, cell("-", nan, "plain has no point at this budget, or was not run"));
      best_->setItem(r, 4, cell("-", nan));
    }
  }
  ppl_->replot();
  top1_->replot();
}

QString FrontView::csvData() const {
  QString out = "method,router,budget,ffn_flops_fraction,k_over_e,mean_k,perplexity,top1_agreement,x_plotted\n";
  if (!front_) return out;
  const FrontResult& f = *front_->core;
  auto g = [](double v) { return QString::number(v, 'g', 8); };
  for (const FrontMethod& m : f.methods)
    for (const FrontPoint& p : m.points)
      out += QStringList{QString::fromStdString(m.name),
                         QString::fromStdString(m.router),
                         g(p.budget),
                         g(p.ffnFlopsFraction),
                         g(p.fraction),
                         g(p.meanK),
                         g(p.perplexity),
                         g(p.top1Agreement),
                         g(m.name == "bound" ? p.fraction : p.ffnFlopsFraction)}
                 .join(',') +
             "\n";
  out += "dense,,,1,1,," + g(f.densePerplexity) + ",1,\n";
  return out;
}

}  // namespace moefy::views
