// The Experts view: the MoE analysis of a native MoE checkpoint (issue 16),
// drawn from the arrays Analysis::open copies out of readMoeAnalysis.
#include "views/qcp.h"

#include <QFontMetrics>
#include <QGridLayout>
#include <QLabel>
#include <QMouseEvent>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const QColor kHighlight(230, 60, 30);

QString share(double v) { return std::isnan(v) ? QString("-") : QString::number(v, 'f', 3); }

/// Finite minimum and maximum of `m` (its off-diagonal entries when `dropDiagonal`), widened into `lo`, `hi`.
void widenRange(const Analysis::Matrix& m, bool dropDiagonal, double& lo, double& hi) {
  for (int r = 0; r < m.rows; ++r)
    for (int c = 0; c < m.cols; ++c) {
      if (dropDiagonal && r == c) continue;
      const double v = m.at(r, c);
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v), hi = std::max(hi, v);
    }
}

/// Integer ticks 0..n-1 labelled `prefix`N, at most about 12 of them.
QSharedPointer<QCPAxisTickerText> indexTicker(int n, const QString& prefix, const std::vector<int>& labelOf = {}) {
  QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
  const int step = std::max(1, (n + 11) / 12);
  for (int i = 0; i < n; i += step)
    t->addTick(i, prefix + QString::number(labelOf.empty() ? i : labelOf[static_cast<size_t>(i)]));
  return t;
}

}  // namespace

ExpertsView::ExpertsView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Experts", PickAnalysis | PickLayer, parent) {
  optionsBar()->addWidget(new QLabel(" Similarity: ", optionsBar()));
  measure_ = new QComboBox(optionsBar());
  measure_->setObjectName("similarityMeasure");
  measure_->addItem("weights (sim)", "sim");
  measure_->addItem("neuron means (mean_sim)", "mean_sim");
  measure_->addItem("matched neurons (match_sim)", "match_sim");
  measure_->addItem("outputs (output_sim)", "output_sim");
  measure_->setToolTip(
      "sim: cosine of the experts' flattened matrices; mean_sim: of their mean neuron; match_sim: mean cosine of "
      "the neuron pairs of the optimal one-to-one matching; output_sim: mean angular similarity of the experts' "
      "outputs on the corpus");
  optionsBar()->addWidget(measure_);
  optionsBar()->addWidget(new QLabel("  Projection: ", optionsBar()));
  projection_ = new QComboBox(optionsBar());
  projection_->setObjectName("similarityProjection");
  optionsBar()->addWidget(projection_);
  optionsBar()->addWidget(new QLabel("  Rank counts: ", optionsBar()));
  rankScope_ = new QComboBox(optionsBar());
  rankScope_->setObjectName("rankScope");
  rankScope_->addItems({"this layer", "summed over layers"});
  optionsBar()->addWidget(rankScope_);
  optionsBar()->addWidget(new QLabel("  ", optionsBar()));
  scaleMode_ = new QComboBox(optionsBar());
  scaleMode_->setObjectName("scaleMode");
  scaleMode_->addItems({"Per-layer scale", "Global scale"});
  scaleMode_->setToolTip(
      "Colour range of the heatmaps: this layer's values, or one range over every analysed layer (figures exported "
      "for all layers then share it)");
  optionsBar()->addWidget(scaleMode_);
  // The projections of a measure: match_sim also has the whole neuron
  // ([gate row | up row | down column]); output_sim has none.
  auto fillProjections = [this] {
    const QString keep = projection_->currentData().toString();
    const QString m = measure_->currentData().toString();
    const QSignalBlocker block(projection_);
    projection_->clear();
    if (m == "match_sim") projection_->addItem("whole neuron", "");
    if (m != "output_sim")
      for (const char* p : {"gate", "up", "down"}) projection_->addItem(p, QString(p));
    const int i = projection_->findData(keep);
    projection_->setCurrentIndex(i >= 0 ? i : 0);
    projection_->setEnabled(m != "output_sim");
  };
  fillProjections();
  connect(measure_, &QComboBox::currentIndexChanged, this, [this, fillProjections] {
    fillProjections();
    refresh();
  });
  for (QComboBox* c : {projection_, rankScope_, scaleMode_})
    connect(c, &QComboBox::currentIndexChanged, this, [this] { refresh(); });

  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  plotsWidget_ = new QWidget(body());
  plotsWidget_->setObjectName("expertsPlots");
  auto* grid = new QGridLayout(plotsWidget_);
  grid->setContentsMargins(0, 0, 0, 0);
  grid->setSpacing(4);
  // Short titles: a heatmap's title shares its plot's width with the colour scale.
  const char* titles[PanelCount] = {"Expert similarity", "Router similarity", "Rank: router vs norm",
                                    "Expert usage",      "Co-occurrence",     "PCA of experts"};
  const char* names[PanelCount] = {"expertsSimilarity", "expertsRouter",       "expertsRankCounts",
                                   "expertsUsage",      "expertsCooccurrence", "expertsPca"};
  for (int p = 0; p < PanelCount; ++p) {
    auto* plot = new QCustomPlot(plotsWidget_);
    plot->setObjectName(names[p]);
    plots_[p] = plot;
    const bool heat = p != Usage && p != Pca;
    if (heat) {
      std::tie(maps_[p], scales_[p]) = addHeatmap(plot);  // whole first/last cells, row 0 at the top
    }
    addTitle(plot, titles[p]);
    captions_[p] = addDataCaption(plot);
    applyPublicationStyle(plot);
    if (heat) {
      scales_[p]->axis()->setTickLabelFont(figureFont(8));
      plot->xAxis->grid()->setVisible(false);
      plot->yAxis->grid()->setVisible(false);
    }
    // Six panels share a 1366x768 screen: each is about 300 x 230 px there.
    plot->setMinimumSize(170, 170);  // three columns fit beside a widened inspector at 1366 px
    plot->installEventFilter(this);  // re-wraps the caption to the new width
    grid->addWidget(plot, p / 3, p % 3);
    if (p == Usage)
      connect(plot, &QCustomPlot::afterLayout, this, [plot] {
        if (plot->yAxis->scaleType() != QCPAxis::stLogarithmic) return;
        const int h = plot->axisRect()->height();
        if (plot->property("tickHeight").toInt() == h) return;
        plot->setProperty("tickHeight", h);
        plot->yAxis->setTicker(logTicker(plot->yAxis->range(), h, QFontMetrics(plot->yAxis->tickLabelFont()).height()));
        plot->replot(QCustomPlot::rpQueuedReplot);
      });
    connect(plot, &QCustomPlot::mousePress, this, [this, p](QMouseEvent* ev) {
      if (ev->button() != Qt::LeftButton) return;
      const int e = expertAt(static_cast<Panel>(p), ev->position());
      if (e >= 0) this->ctx()->selectExpert(layer(), e);
    });
  }
  for (int c = 0; c < 3; ++c) grid->setColumnStretch(c, 1);
  lay->addWidget(plotsWidget_);
  connect(ctx, &StudioContext::expertSelected, this, [this](int, int) { highlight(); });
  refresh();
}

QWidget* ExpertsView::figureRoot() { return plotsWidget_; }

QString ExpertsView::similarityTensor() const {
  const QString m = measure_->currentData().toString(), p = projection_->currentData().toString();
  return m == "output_sim" || p.isEmpty() ? m : m + "." + p;
}

bool ExpertsView::eventFilter(QObject* watched, QEvent* event) {
  if (event->type() == QEvent::Resize)
    for (QCustomPlot* p : plots_)
      if (watched == p) layoutCaptions();
  return FigureView::eventFilter(watched, event);
}

void ExpertsView::setCaption(Panel p, const QString& text) { captionText_[p] = text; }

void ExpertsView::layoutCaptions() {
  for (int p = 0; p < PanelCount; ++p) {
    // QCPTextElement does not wrap: a caption wider than its plot would be cut at the edges.
    // A heatmap's caption has the width of the plot less its colour scale (about 70 px).
    const int width = plots_[p]->width() - (scales_[p] ? 70 : 0) - 16;
    const QString wrapped = wrapToWidth(captionText_[p], captions_[p]->font(), std::max(100, width));
    if (wrapped != captions_[p]->text()) {
      captions_[p]->setText(wrapped);
      plots_[p]->replot(QCustomPlot::rpQueuedReplot);
    }
  }
}

void ExpertsView::refresh() {
  const QString path = ctx()->hasWorkspace() ? picked("analysis") : QString();
  analysis_ = path.isEmpty() ? nullptr : ctx()->analysis(path);
  error_ = analysis_ || path.isEmpty() ? QString() : ctx()->loadError(path);
  for (int p = 0; p < PanelCount; ++p) {
    plots_[p]->clearItems();
    if (!maps_[p]) plots_[p]->clearPlottables();  // the usage bars, the PCA graphs
  }
  usageOrder_.clear();
  expertPoints_.clear();
  neuronPoints_.clear();
  neuronExpert_.clear();
  for (QString& c : captionText_) c.clear();
  if (!analysis_) {
    setLayers({});
    setEmptyState(!ctx()->hasWorkspace() ? "No workspace open."
                  : !error_.isEmpty()
                      ? "Cannot read this analysis:\n\n" + error_
                      : "No MoE analysis yet.\n\nRun `moefy analyze MODEL_DIR CORPUS --out WORKSPACE/analyses/NAME` "
                        "on a native MoE checkpoint (Mixtral, Qwen2-MoE, OLMoE) or on a MoE export of this workspace "
                        "(Pipeline > Export, `moefy export`); its folder appears here.");
    layoutCaptions();
    return;
  }
  setLayers(analysis_->layers, analysis_->sites);
  const int L = layer();
  auto it = analysis_->perLayer.find(L);
  if (it == analysis_->perLayer.end()) {
    setEmptyState("This analysis has no analysed layer.");
    return;
  }
  setEmptyState("");
  const Analysis::Layer& lay = it->second;
  const int E = lay.experts;
  for (QCustomPlot* p : plots_) p->setToolTip(analysis_->dir + "\n" + QString::fromStdString(lay.site.name()));

  // A projection the layer lacks (a plain FFN export has no gate): the first one it has.
  if (!lay.matrix(similarityTensor().toStdString())) {
    const QString m = measure_->currentData().toString();
    for (int i = 0; i < projection_->count(); ++i) {
      const QString proj = projection_->itemData(i).toString();
      if (!lay.matrix((proj.isEmpty() ? m : m + "." + proj).toStdString())) continue;
      const QSignalBlocker block(projection_);
      projection_->setCurrentIndex(i);
      break;
    }
  }
  // Similarity: the measure and projection picked, with the router's fit to it.
  const std::string sim = similarityTensor().toStdString();
  drawHeatmap(Similarity, sim, false, false, E);
  {
    const QString m = measure_->currentData().toString(), proj = projection_->currentData().toString();
    QString text = m == "sim"        ? "cosine of the flattened " + proj + " matrices"
                   : m == "mean_sim" ? "cosine of the mean " + proj + " neuron"
                   : m == "match_sim"
                       ? "mean cosine of optimally matched neurons" + (proj.isEmpty() ? QString() : " (" + proj + ")")
                       : QString("mean angular similarity of the outputs");
    if ((m == "sim" || m == "mean_sim") && lay.matrix(sim))
      text += ", router R\u00b2 " + share(lay.scalar({"router_r2", m.toUtf8().constData(), proj.toUtf8().constData()}));
    if (m == "match_sim" && lay.scalars.is_object() && lay.scalars.value("matching", std::string()) != "optimal")
      text += " (" + QString::fromStdString(lay.scalars.value("matching", std::string("not computed"))) + ")";
    if (!lay.matrix(sim))
      text = m == "output_sim" ? "needs a corpus (this analysis is weights only)" : "not in this analysis";
    setCaption(Similarity, text);
  }
  drawHeatmap(RouterSimilarity, "router_sim", false, false, E);
  {
    // An export whose router has no row per expert says why in analysis.json ("router_sim": "skipped: ...").
    const bool why =
        lay.scalars.is_object() && lay.scalars.contains("router_sim") && lay.scalars["router_sim"].is_string();
    setCaption(RouterSimilarity, lay.matrix("router_sim") ? QString("cosine of the router's rows")
                                 : why ? QString::fromStdString(lay.scalars["router_sim"].get<std::string>())
                                       : QString("no router similarity in this analysis"));
  }

  const bool summed = rankScope_->currentIndex() == 1;
  drawHeatmap(RankCounts, "rank_counts", summed, false, E);
  if (summed ? analysis_->rankCounts.empty() : !lay.matrix("rank_counts"))
    setCaption(RankCounts, summed && lay.matrix("rank_counts") ? "layers differ in their expert count: no sum"
                                                               : "needs a corpus (this analysis is weights only)");
  else
    setCaption(RankCounts,
               QString("(token, expert) pairs; top-1 = largest norm: %1 of tokens (%2)")
                   .arg(share(summed ? analysis_->top1NormShare : lay.scalar({"dynamic", "top1_norm_share"})))
                   .arg(summed ? QString("all layers") : QString::fromStdString(lay.site.name())));
  plots_[RankCounts]->xAxis->setLabel("output-norm rank");
  plots_[RankCounts]->yAxis->setLabel("router rank");

  drawHeatmap(Cooccurrence, "cooccurrence", false, true, E);
  setCaption(Cooccurrence, lay.matrix("cooccurrence") ? "tokens choosing both; diagonal removed, rows sum to 1"
                                                      : "needs a corpus (this analysis is weights only)");
  drawUsage();
  drawPca();
  highlight();
  layoutCaptions();
}

void ExpertsView::drawHeatmap(Panel p, const std::string& tensor, bool summed, bool dropDiagonal, int experts) {
  QCustomPlot* plot = plots_[p];
  QCPColorMap* map = maps_[p];
  const Analysis::Layer& lay = analysis_->perLayer.at(layer());
  const Analysis::Matrix* m =
      summed ? (analysis_->rankCounts.empty() ? nullptr : &analysis_->rankCounts) : lay.matrix(tensor);
  const int n = m ? m->rows : experts;
  map->setVisible(m != nullptr);
  scales_[p]->setVisible(m != nullptr);
  map->data()->setSize(std::max(1, n), std::max(1, n));
  // Cell centres at the integers 0..n-1 (QCPColorMapData puts them at the range ends).
  map->data()->setRange(QCPRange(0, std::max(1, n - 1)), QCPRange(0, std::max(1, n - 1)));
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  if (m) {
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < n; ++c) map->data()->setCell(c, r, dropDiagonal && r == c ? kNaN : m->at(r, c));
    if (scaleMode_->currentIndex() == 1 && !summed) {
      // One range over every analysed layer's matrix of this name.
      for (const auto& [L, other] : analysis_->perLayer)
        if (const Analysis::Matrix* o = other.matrix(tensor)) widenRange(*o, dropDiagonal, lo, hi);
    } else {
      widenRange(*m, dropDiagonal, lo, hi);
    }
  }
  if (!(lo < hi)) {
    if (!std::isfinite(lo))
      lo = 0, hi = 1;
    else
      lo -= 0.5, hi += 0.5;
  }
  QCPColorGradient g = gradient(ColorMap::Viridis);
  g.setNanHandling(QCPColorGradient::nhNanColor);
  g.setNanColor(QColor(200, 200, 200));
  map->setGradient(g);
  map->setDataRange(QCPRange(lo, hi));
  plot->xAxis->setRange(-0.5, n - 0.5);
  plot->yAxis->setRange(-0.5, n - 0.5);
  const QString prefix = p == RankCounts ? QString() : QString("E");
  plot->xAxis->setTicker(indexTicker(n, prefix));
  plot->yAxis->setTicker(indexTicker(n, prefix));
  plot->xAxis->setLabel(p == RankCounts ? "output-norm rank" : "expert");
  plot->yAxis->setLabel(p == RankCounts ? "router rank" : "expert");
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void ExpertsView::drawUsage() {
  QCustomPlot* plot = plots_[Usage];
  const Analysis::Layer& lay = analysis_->perLayer.at(layer());
  const Analysis::Matrix* u = lay.matrix("usage");
  plot->xAxis->setLabel("expert (by usage)");
  plot->yAxis->setLabel("share (log)");
  if (!u) {
    setCaption(Usage, "needs a corpus (this analysis is weights only)");
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = u->rows;
  usageOrder_.resize(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) usageOrder_[static_cast<size_t>(e)] = e;
  std::stable_sort(usageOrder_.begin(), usageOrder_.end(), [&](int a, int b) { return u->at(a, 0) > u->at(b, 0); });
  // A log axis has no zero: a dead expert's bar ends at the floor, a decade
  // below the smallest share drawn (the caption gives the dead share).
  double minPositive = 1;
  for (int e = 0; e < E; ++e)
    if (u->at(e, 0) > 0) minPositive = std::min(minPositive, u->at(e, 0));
  const double floor = minPositive / 10;
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setName("usage");
  bars->setBaseValue(floor);
  bars->setWidth(0.8);
  bars->setPen(Qt::NoPen);
  bars->setBrush(mapColor(ColorMap::Viridis, 0.35));
  QVector<double> x, y;
  for (int i = 0; i < E; ++i) x << i, y << std::max(floor, u->at(usageOrder_[static_cast<size_t>(i)], 0));
  bars->setData(x, y, true);
  auto* uniform = new QCPItemStraightLine(plot);
  uniform->point1->setCoords(0, 1.0 / E);
  uniform->point2->setCoords(1, 1.0 / E);
  uniform->setPen(QPen(QColor(90, 90, 90), 1, Qt::DashLine));
  plot->yAxis->setScaleType(QCPAxis::stLogarithmic);
  plot->yAxis->setNumberFormat("g");
  double hi = 1.0 / E;
  for (double v : y) hi = std::max(hi, v);
  plot->yAxis->setRange(floor, hi * 1.6);
  // Labelled ticks that never crowd; refitted after each layout (the panel's height changes).
  plot->setProperty("tickHeight", -1);
  plot->yAxis->setTicker(
      logTicker(plot->yAxis->range(), plot->axisRect()->height(), QFontMetrics(plot->yAxis->tickLabelFont()).height()));
  plot->xAxis->setRange(-0.6, E - 0.4);
  plot->xAxis->setTicker(indexTicker(E, "E", usageOrder_));
  setCaption(Usage, QString("usage perplexity %1, dead %2; dashed: 1/E")
                        .arg(share(lay.scalar({"dynamic", "usage_perplexity"})))
                        .arg(share(lay.scalar({"dynamic", "dead_share"}))));
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void ExpertsView::drawPca() {
  QCustomPlot* plot = plots_[Pca];
  const Analysis::Layer& lay = analysis_->perLayer.at(layer());
  plot->xAxis->setLabel("PC 1");
  plot->yAxis->setLabel("PC 2");
  const Analysis::Matrix* ex = lay.matrix("pca.experts");
  const Analysis::Matrix* nu = lay.matrix("pca.neurons");
  if (!ex) {
    setCaption(Pca, "not in this analysis");
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = lay.experts;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  auto widen = [&](double x, double y) {
    xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
  };
  // The neurons and the experts are two PCAs (of vectors of different
  // length: an expert's flattened matrices, one neuron's 3 d_model values):
  // the neurons' scores are scaled so that their largest |score| is the
  // experts' (the caption says so), small and coloured by expert; the experts
  // as labelled markers at their own scores.
  if (nu) {
    neuronExpert_ = lay.neuronExpert;
    double expertMax = 0, neuronMax = 0;
    for (double v : ex->values) expertMax = std::max(expertMax, std::abs(v));
    for (double v : nu->values) neuronMax = std::max(neuronMax, std::abs(v));
    const double f = neuronMax > 0 && expertMax > 0 ? expertMax / neuronMax : 1.0;
    for (int i = 0; i < nu->rows; ++i) neuronPoints_.emplace_back(f * nu->at(i, 0), f * nu->at(i, 1));
    for (int e = 0; e < E; ++e) {
      QVector<double> x, y;
      for (size_t i = 0; i < neuronPoints_.size(); ++i)
        if (neuronExpert_[i] == e) x << neuronPoints_[i].first, y << neuronPoints_[i].second;
      auto* g = plot->addGraph();
      g->setLineStyle(QCPGraph::lsNone);
      const QColor c = expertColor(e, E);
      g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, c, c, 3));
      g->setData(x, y);
      g->setName(QString("neurons of E%1").arg(e));
      for (int i = 0; i < x.size(); ++i) widen(x[i], y[i]);
    }
  }
  QVector<double> x, y;
  for (int e = 0; e < ex->rows; ++e) {
    expertPoints_.emplace_back(ex->at(e, 0), ex->at(e, 1));
    x << ex->at(e, 0), y << ex->at(e, 1);
    widen(ex->at(e, 0), ex->at(e, 1));
  }
  auto* g = plot->addGraph();
  g->setLineStyle(QCPGraph::lsNone);
  g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssSquare, Qt::black, QColor(255, 255, 255, 200), 8));
  g->setData(x, y);
  g->setName("experts");
  // Labels above-right of their marker, but below it in the top quarter of
  // the points' range and left of it in the right quarter, so that a label
  // never runs past the plot's top or right edge (where it was cut).
  for (int e = 0; e < ex->rows; ++e) {
    auto* label = new QCPItemText(plot);
    label->position->setCoords(x[e], y[e]);
    const bool top = y[e] > ylo + 0.75 * (yhi - ylo), right = x[e] > xlo + 0.75 * (xhi - xlo);
    label->setPositionAlignment((right ? Qt::AlignRight : Qt::AlignLeft) | (top ? Qt::AlignTop : Qt::AlignBottom));
    label->setPadding(QMargins(right ? 0 : 5, top ? 2 : 0, right ? 5 : 0, top ? 0 : 2));
    label->setFont(figureFont(8));
    label->setText(QString("E%1").arg(e));
    label->setProperty("pcaLabel", e);
  }
  const double dx = std::max(1e-9, xhi - xlo) * 0.12, dy = std::max(1e-9, yhi - ylo) * 0.12;
  plot->xAxis->setRange(xlo - dx, xhi + dx);
  plot->yAxis->setRange(ylo - dy, yhi + dy);
  const nlohmann::json explained = lay.scalars.is_object() && lay.scalars.contains("pca_explained")
                                       ? lay.scalars["pca_explained"]
                                       : nlohmann::json();
  auto pct = [](const nlohmann::json& a) {
    if (!a.is_array() || a.size() != 2 || !a[0].is_number() || !a[1].is_number()) return QString("-");
    return QString("%1 % + %2 %").arg(a[0].get<double>() * 100, 0, 'f', 1).arg(a[1].get<double>() * 100, 0, 'f', 1);
  };
  QString text = "explained: experts (squares) " +
                 pct(explained.is_object() ? explained.value("experts", nlohmann::json()) : nlohmann::json());
  text += nu ? "; neurons (dots by expert, rescaled) " +
                   pct(explained.is_object() ? explained.value("neurons", nlohmann::json()) : nlohmann::json())
             : QString("; neuron PCA skipped");
  setCaption(Pca, text);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

int ExpertsView::expertAt(Panel p, const QPointF& pixel) const {
  if (!analysis_ || p == RankCounts || !analysis_->perLayer.count(layer())) return -1;
  const int E = analysis_->perLayer.at(layer()).experts;
  QCustomPlot* plot = plots_[p];
  if (!plot->axisRect()->rect().contains(pixel.toPoint())) return -1;
  const double x = plot->xAxis->pixelToCoord(pixel.x()), y = plot->yAxis->pixelToCoord(pixel.y());
  if (p == Usage) {
    const int i = static_cast<int>(std::lround(x));
    return i >= 0 && i < static_cast<int>(usageOrder_.size()) ? usageOrder_[static_cast<size_t>(i)] : -1;
  }
  if (p == Pca) {
    // The nearest expert marker within 24 px, else the nearest neuron's expert within 8 px.
    auto nearest = [&](const std::vector<std::pair<double, double>>& pts, double radius) {
      int best = -1;
      double bestD = radius * radius;
      for (size_t i = 0; i < pts.size(); ++i) {
        const double dx = plot->xAxis->coordToPixel(pts[i].first) - pixel.x();
        const double dy = plot->yAxis->coordToPixel(pts[i].second) - pixel.y();
        if (dx * dx + dy * dy <= bestD) bestD = dx * dx + dy * dy, best = static_cast<int>(i);
      }
      return best;
    };
    const int e = nearest(expertPoints_, 24);
    if (e >= 0) return e;
    const int n = nearest(neuronPoints_, 8);
    return n >= 0 ? neuronExpert_[static_cast<size_t>(n)] : -1;
  }
  if (!maps_[p]->visible()) return -1;
  const int r = static_cast<int>(std::lround(y)), c = static_cast<int>(std::lround(x));
  return r >= 0 && r < E && c >= 0 && c < E ? r : -1;
}

void ExpertsView::highlight() {
  for (QCustomPlot* plot : plots_)
    for (int i = plot->itemCount() - 1; i >= 0; --i)
      if (plot->item(i)->property("selectedExpert").isValid()) plot->removeItem(i);
  const int e = ctx()->selectedExpert();
  if (!analysis_ || !analysis_->perLayer.count(layer()) || ctx()->selectedLayer() != layer() || e < 0 ||
      e >= analysis_->perLayer.at(layer()).experts) {
    for (QCustomPlot* plot : plots_) plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = analysis_->perLayer.at(layer()).experts;
  const QPen pen(kHighlight, 2);
  auto rect = [&](QCustomPlot* plot, double x0, double y0, double x1, double y1) {
    auto* r = new QCPItemRect(plot);
    r->topLeft->setCoords(x0, y0);
    r->bottomRight->setCoords(x1, y1);
    r->setPen(pen);
    r->setBrush(Qt::NoBrush);
    r->setProperty("selectedExpert", e);
    return r;
  };
  // Heatmaps: the expert's row and column, inset by the pen's width so that
  // the whole outline lies on the map (not on the axis rect's edge or past it
  // onto the colour scale).
  for (Panel p : {Similarity, RouterSimilarity, Cooccurrence}) {
    if (!maps_[p]->visible()) continue;
    QCustomPlot* plot = plots_[p];
    // At most a quarter cell (and none before the first layout, when the axis rect has no size).
    auto inset = [&](QCPAxis* a) {
      const double d = std::abs(a->pixelToCoord(pen.widthF()) - a->pixelToCoord(0));
      return std::isfinite(d) ? std::min(d, 0.25) : 0.0;
    };
    const double ix = inset(plot->xAxis), iy = inset(plot->yAxis);
    const double lo = -0.5, hi = E - 0.5;
    rect(plot, lo + ix, e - 0.5, hi - ix, e + 0.5);
    rect(plot, e - 0.5, lo + iy, e + 0.5, hi - iy);
  }
  // Usage: its bar, outlined from the floor to the top.
  if (!usageOrder_.empty()) {
    const auto at = std::find(usageOrder_.begin(), usageOrder_.end(), e) - usageOrder_.begin();
    const QCPRange yr = plots_[Usage]->yAxis->range();
    double top = yr.lower;
    auto* bars = plots_[Usage]->plottableCount() > 0 ? qobject_cast<QCPBars*>(plots_[Usage]->plottable(0)) : nullptr;
    if (bars && at < static_cast<std::ptrdiff_t>(bars->data()->size())) top = (bars->data()->begin() + at)->value;
    rect(plots_[Usage], at - 0.45, top, at + 0.45, yr.lower);
  }
  // PCA: a ring around the expert's marker.
  if (e < static_cast<int>(expertPoints_.size())) {
    QCustomPlot* plot = plots_[Pca];
    auto* ring = new QCPItemEllipse(plot);
    const auto [x, y] = expertPoints_[static_cast<size_t>(e)];
    // About 9 px around the marker, in plot coordinates (it stays on the marker in exports of another size).
    const double px = plot->xAxis->coordToPixel(x), py = plot->yAxis->coordToPixel(y);
    const double rx = std::abs(plot->xAxis->pixelToCoord(px + 9) - x),
                 ry = std::abs(plot->yAxis->pixelToCoord(py - 9) - y);
    ring->topLeft->setCoords(x - rx, y + ry);
    ring->bottomRight->setCoords(x + rx, y - ry);
    ring->setPen(QPen(kHighlight, 2.5));
    ring->setProperty("selectedExpert", e);
  }
  for (QCustomPlot* plot : plots_) plot->replot(QCustomPlot::rpQueuedReplot);
}

QString ExpertsView::csvData() const {
  QString out = "panel,site,row,column,value\n";
  if (!analysis_ || !analysis_->perLayer.count(layer())) return out;
  const Analysis::Layer& lay = analysis_->perLayer.at(layer());
  const QString site = QString::fromStdString(lay.site.name());
  auto matrix = [&](const QString& name, const QString& where, const Analysis::Matrix& m) {
    for (int r = 0; r < m.rows; ++r)
      for (int c = 0; c < m.cols; ++c)
        out += QString("%1,%2,%3,%4,%5\n").arg(name, where).arg(r).arg(c).arg(m.at(r, c), 0, 'g', 10);
  };
  for (const std::string& name :
       {similarityTensor().toStdString(), std::string("router_sim"), std::string("cooccurrence")})
    if (const Analysis::Matrix* m = lay.matrix(name)) matrix(QString::fromStdString(name), site, *m);
  if (rankScope_->currentIndex() == 1 && !analysis_->rankCounts.empty())
    matrix("rank_counts", "all", analysis_->rankCounts);
  else if (const Analysis::Matrix* m = lay.matrix("rank_counts"))
    matrix("rank_counts", site, *m);
  // Usage: row = expert, column = its bar's position.
  if (const Analysis::Matrix* u = lay.matrix("usage"))
    for (size_t i = 0; i < usageOrder_.size(); ++i)
      out +=
          QString("usage,%1,%2,%3,%4\n").arg(site).arg(usageOrder_[i]).arg(i).arg(u->at(usageOrder_[i], 0), 0, 'g', 10);
  if (const Analysis::Matrix* m = lay.matrix("pca.experts")) matrix("pca.experts", site, *m);
  if (const Analysis::Matrix* m = lay.matrix("pca.neurons")) matrix("pca.neurons", site, *m);
  return out;
}

}  // namespace moefy::views
