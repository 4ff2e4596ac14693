#include "views/qcp.h"

#include <QFontMetrics>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QPainter>
#include <QPointer>
#include <QPushButton>
#include <QStackedWidget>
#include <QTabBar>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "analysis/jobs/job.h"
#include "analysis/route/router_scores.h"
#include "views/context.h"
#include "views/jobrunner.h"
#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

/// Tokens laid out as text, each on a background coloured by its top expert.
class TokenStrip : public QWidget {
 public:
  explicit TokenStrip(QWidget* parent) : QWidget(parent) {
    setProperty("vectorFigure", true);
    setMinimumHeight(90);
  }
  struct Tok {
    QString text;
    int expert;
  };
  void setTokens(std::vector<Tok> t, int E, QString caption) {
    toks_ = std::move(t);
    E_ = E;
    caption_ = std::move(caption);
    update();
  }
  QSize sizeHint() const override { return QSize(600, 110); }

 protected:
  void paintEvent(QPaintEvent*) override {
    QPainter p(this);
    p.fillRect(rect(), Qt::white);
    p.setFont(figureFont(10));
    QFontMetrics fm(p.font());
    int x = 6, y = 6, h = fm.height() + 6;
    p.setPen(Qt::black);
    p.drawText(QRect(6, y, width() - 12, h), Qt::AlignLeft | Qt::AlignVCenter, caption_);
    y += h + 2;
    for (const auto& t : toks_) {
      QString label = t.text;
      QString sub = QString::number(t.expert);
      int w = fm.horizontalAdvance(label) + fm.horizontalAdvance(sub) * 3 / 4 + 10;
      if (x + w > width() - 6) x = 6, y += h + 4;
      QRect r(x, y, w, h);
      p.setPen(Qt::NoPen);
      p.setBrush(expertColor(t.expert, E_));
      p.drawRoundedRect(r, 3, 3);
      p.setPen(Qt::black);
      p.drawText(r.adjusted(4, 0, 0, 0), Qt::AlignLeft | Qt::AlignVCenter, label);
      QFont small = figureFont(7);
      p.setFont(small);
      p.setPen(QColor(60, 60, 60));
      p.drawText(r.adjusted(0, 0, -3, -1), Qt::AlignRight | Qt::AlignBottom, sub);
      p.setFont(figureFont(10));
      x += w + 3;
    }
    if (y + h + 6 > minimumHeight()) setMinimumHeight(y + h + 6);
  }

 private:
  std::vector<Tok> toks_;
  int E_ = 1;
  QString caption_;
};

namespace {

// The token labels of the score heatmap's y axis, one row per token. A
// document of 48 sampled tokens at 1366x768 leaves about 5 px per row, and
// one label per row overlapped into an unreadable smear. This ticker labels
// every n-th row, n chosen from the axis's pixel length per row and the label
// font's height, so labels never overlap and keep their size; the token
// strip under the plot still names every token.
class FittingTextTicker : public QCPAxisTickerText {
 public:
  explicit FittingTextTicker(QCPAxis* axis) : axis_(axis) {}
  /// Rows per label for the axis's present geometry (>= 1).
  int strideNow() const {
    if (!axis_) return 1;
    const double perRow = std::abs(axis_->coordToPixel(1.0) - axis_->coordToPixel(0.0));
    const int label = QFontMetrics(axis_->tickLabelFont()).height() + 1;  // one pixel between labels
    return perRow <= 0 ? 1 : std::max(1, static_cast<int>(std::ceil(label / perRow)));
  }
  /// Rows per label used by the last tick generation.
  int strideUsed() const { return stride_; }

 protected:
  QVector<double> createTickVector(double tickStep, const QCPRange& range) override {
    const QVector<double> all = QCPAxisTickerText::createTickVector(tickStep, range);
    stride_ = strideNow();
    QVector<double> kept;
    for (double t : all)
      if (static_cast<long long>(std::llround(t)) % stride_ == 0) kept << t;
    return kept;
  }

 private:
  QPointer<QCPAxis> axis_;
  int stride_ = 1;
};

QSharedPointer<QCPAxisTicker> integerTicker(int n, bool compact = false) {
  QSharedPointer<QCPAxisTickerFixed> t(new QCPAxisTickerFixed);
  if (compact) n *= 2;
  t->setTickStep(n <= 20 ? 1.0 : n <= 40 ? 2.0 : n <= 64 ? 4.0 : n <= 160 ? 10.0 : 50.0);
  t->setScaleStrategy(QCPAxisTickerFixed::ssNone);
  return t;
}
// The first of `labels` (longest first; lines split by \n) whose longest line
// fits along `axis`'s length, else the last: a vertical label longer than the
// axis rect runs past the plot's title or its bottom edge and is cut there.
// Re-run after every layout (the axis rect's height changes with the window).
void fitAxisLabel(QCPAxis* axis, const QStringList& labels) {
  const QFontMetrics fm(axis->labelFont());
  const int room = axis->orientation() == Qt::Vertical ? axis->axisRect()->height() : axis->axisRect()->width();
  QString pick = labels.last();
  for (const QString& l : labels) {
    int longest = 0;
    for (const QString& line : l.split('\n')) longest = std::max(longest, fm.horizontalAdvance(line));
    if (longest <= room) {
      pick = l;
      break;
    }
  }
  if (axis->label() != pick) {
    axis->setLabel(pick);
    axis->parentPlot()->replot(QCustomPlot::rpQueuedReplot);
  }
}

const QStringList kUsageYLabels{"share of tokens routed", "share of\ntokens routed", "share\nrouted"};

QCustomPlot* plotWithTitle(QWidget* parent, const QString& title) {
  auto* p = new QCustomPlot(parent);
  p->plotLayout()->insertRow(0);
  p->plotLayout()->addElement(0, 0, new QCPTextElement(p, title, QFont(figureFont(11).family(), 11, QFont::Bold)));
  applyPublicationStyle(p);
  p->setMinimumSize(240, 150);
  return p;
}
}  // namespace

RouterView::RouterView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Router choices", PickRecording | PickPartition | PickRouter | PickLayer, parent) {
  optionsBar()->addWidget(new QLabel(" Document: ", optionsBar()));
  doc_ = new QComboBox(optionsBar());
  doc_->setObjectName("documentPicker");
  doc_->setSizeAdjustPolicy(QComboBox::AdjustToContents);
  optionsBar()->addWidget(doc_);
  connect(doc_, &QComboBox::currentIndexChanged, this, [this] { redrawDocument(); });
  optionsBar()->addWidget(new QLabel("  or type a text: ", optionsBar()));
  text_ = new QLineEdit(optionsBar());
  text_->setObjectName("routeText");
  text_->setPlaceholderText("The cat sat on the mat.");
  text_->setClearButtonEnabled(true);
  text_->setMinimumWidth(220);
  text_->setToolTip(
      "Tokenised with the workspace model's tokenizer and run through the model; the picked "
      "router/partition route its tokens at the picked layer. An encoder-decoder (T5) model "
      "translates it: encoder sites route the source tokens, decoder sites the translation's "
      "tokens");
  optionsBar()->addWidget(text_);
  runText_ = new QPushButton("Run", optionsBar());
  runText_->setObjectName("runText");
  optionsBar()->addWidget(runText_);
  // Shown instead of routing a typed text where the picked site cannot take
  // one (a native MoE model's expert sites).
  textNote_ = new QLabel(optionsBar());
  textNote_->setObjectName("routeTextNote");
  textNoteAction_ = optionsBar()->addWidget(textNote_);
  textNoteAction_->setVisible(false);
  connect(runText_, &QPushButton::clicked, this, [this] { runText(text_->text()); });
  connect(text_, &QLineEdit::returnPressed, this, [this] { runText(text_->text()); });
  // Two panels, the router's choices and its diagnostics, switched by tabs
  // standing on the body's left edge: at 1366x768 the options bar has no room
  // left and the figures no height to spare, while ~22 px of width cost little.
  auto* bodyLayout = new QHBoxLayout(body());
  bodyLayout->setContentsMargins(0, 0, 0, 0);
  bodyLayout->setSpacing(0);
  panelTabs_ = new QTabBar(body());
  panelTabs_->setObjectName("routerPanels");
  panelTabs_->setShape(QTabBar::RoundedWest);
  panelTabs_->setDocumentMode(true);
  panelTabs_->setExpanding(false);
  panelTabs_->addTab("Choices");
  panelTabs_->addTab("Diagnostics");
  panelTabs_->setTabToolTip(0, "The router's scores and top-k on the sampled tokens, expert usage");
  panelTabs_->setTabToolTip(1,
                            "Training loss per epoch (picked site), mass recall and overlap of every site, "
                            "load balance of the picked site");
  bodyLayout->addWidget(panelTabs_, 0, Qt::AlignTop);
  pages_ = new QStackedWidget(body());
  pages_->setObjectName("routerPages");
  bodyLayout->addWidget(pages_, 1);
  auto* choicesPage = new QWidget(pages_);
  choicesPage->setObjectName("routerChoicesPage");
  auto* diagPage = new QWidget(pages_);
  diagPage->setObjectName("routerDiagnosticsPage");
  pages_->addWidget(choicesPage);
  pages_->addWidget(diagPage);
  connect(panelTabs_, &QTabBar::currentChanged, pages_, &QStackedWidget::setCurrentIndex);

  auto* g = new QGridLayout(choicesPage);
  g->setContentsMargins(6, 6, 6, 6);
  scores_ = plotWithTitle(choicesPage, "Router scores per token");
  // The token ticker thins its labels by the geometry of the previous layout:
  // after a resize one more replot brings them in line with the new one.
  connect(scores_, &QCustomPlot::afterReplot, this, [this] {
    auto t = scores_->yAxis->ticker().dynamicCast<FittingTextTicker>();
    if (t && t->strideUsed() != t->strideNow()) scores_->replot(QCustomPlot::rpQueuedReplot);
  });
  usage_ = plotWithTitle(choicesPage, "Expert usage");
  connect(usage_, &QCustomPlot::afterLayout, this, [this] { fitAxisLabel(usage_->yAxis, kUsageYLabels); });
  cats_ = plotWithTitle(choicesPage, "Expert usage by category");
  strip_ = new TokenStrip(choicesPage);
  note_ = new QLabel(choicesPage);
  note_->setWordWrap(true);
  g->addWidget(scores_, 0, 0, 2, 1);
  g->addWidget(usage_, 0, 1);
  g->addWidget(cats_, 1, 1);
  g->addWidget(strip_, 2, 0, 1, 2);
  g->addWidget(note_, 3, 0, 1, 2);
  g->setColumnStretch(0, 3);
  g->setColumnStretch(1, 2);
  g->setRowStretch(0, 1);
  g->setRowStretch(1, 1);

  // The diagnostics panel: training curves and per-site metrics side by
  // side, the load balance in the caption under them.
  auto* d = new QGridLayout(diagPage);
  d->setContentsMargins(6, 6, 6, 6);
  train_ = plotWithTitle(diagPage, "Router training loss");
  train_->setObjectName("routerTrainingPlot");
  trainCaption_ = addDataCaption(train_);
  train_->xAxis->setLabel("epoch");
  train_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
  siteMetrics_ = plotWithTitle(diagPage, "Mass recall and overlap per site");
  siteMetrics_->setObjectName("routerSiteMetricsPlot");
  metricsGroup_ = new QCPBarsGroup(siteMetrics_);
  metricsGroup_->setSpacingType(QCPBarsGroup::stAbsolute);
  metricsGroup_->setSpacing(1);
  siteMetrics_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignHCenter);
  diagCaption_ = new QLabel(diagPage);
  diagCaption_->setObjectName("routerDiagnosticsCaption");
  diagCaption_->setWordWrap(true);
  diagCaption_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  d->addWidget(train_, 0, 0);
  d->addWidget(siteMetrics_, 0, 1);
  d->addWidget(diagCaption_, 1, 0, 1, 2);
  d->setColumnStretch(0, 1);
  d->setColumnStretch(1, 1);
  d->setRowStretch(0, 1);
  // A click on a site's bars picks that site (when the site picker lists it).
  connect(siteMetrics_, &QCustomPlot::mousePress, this, [this](QMouseEvent* ev) {
    const long i = std::lround(siteMetrics_->xAxis->pixelToCoord(ev->position().x()));
    if (i < 0 || i >= static_cast<long>(diagLayers_.size()) || !layerCombo()) return;
    const int at = layerCombo()->findData(diagLayers_[static_cast<size_t>(i)]);
    if (at >= 0) layerCombo()->setCurrentIndex(at);
  });

  connect(ctx, &StudioContext::expertSelected, this, [this](int, int) { redrawDocument(); });
  connect(scores_, &QCustomPlot::mousePress, this, [this](QMouseEvent* ev) {
    int e = static_cast<int>(std::lround(scores_->xAxis->pixelToCoord(ev->position().x())));
    if (e >= 0 && e < E_) this->ctx()->selectExpert(layer(), e);
  });
  refresh();
}

void RouterView::refresh() {
  score_.clear();
  shownRows_ = 0;
  // The diagnostics are redrawn with the choices below (stale ones are not kept).
  trainNote_.clear();
  diagSites_.clear();
  diagLayers_.clear();
  diagPicked_ = -1;
  balanceOk_ = false;
  // A typed text needs what the heatmap needs (enabled again below once it has data).
  text_->setEnabled(false);
  runText_->setEnabled(false);
  if (!textRan_.isEmpty() && (!ctx()->hasWorkspace() || ctx()->workspace().model() != textModel_)) {
    textRan_.clear();  // another workspace or model: the typed text's activations are stale
    textAct_ = TextActivations();
    textLayer_ = -1;
  }
  rec_ = ctx()->hasWorkspace() ? ctx()->recording(picked("recording")) : nullptr;
  router_ = ctx()->hasWorkspace() ? ctx()->router(picked("router")) : nullptr;
  // The Partition picker drives the view (issue 20 defect 7). Picking another
  // router moves the picker to that router's own partition once; a trained
  // router shown over a partition it was not built on is refused below.
  const QString routerPath = router_ ? router_->dir : QString();
  const QString routerPart = router_ ? QFileInfo(router_->partitionPath).canonicalFilePath() : QString();
  const bool routerChanged = routerPath != lastRouter_;
  lastRouter_ = routerPath;  // before setPickerValue, which may refresh() re-entrantly
  if (router_ && routerChanged && !routerPart.isEmpty())
    for (const QString& p : ctx()->paths("partition"))
      if (QFileInfo(p).canonicalFilePath() == routerPart) setPickerValue("partition", p);
  part_ = ctx()->hasWorkspace() ? ctx()->partition(picked("partition")) : nullptr;
  if (!rec_ || !part_) {
    setLayers({});
    setEmptyState(
        !ctx()->hasWorkspace() ? "No workspace open."
        : !rec_
            ? "No recording yet.\n\nRouter choices are shown on the recording's sampled tokens: "
              "run Pipeline > Record activations..., then Split into experts... and Build router..."
            : "No partition yet.\n\nSplit the recording into experts (Pipeline > Split into experts...) and build a "
              "router (Pipeline > Build router...).");
    return;
  }
  if (router_ && router_->kind != "oracle" && !routerPart.isEmpty() &&
      QFileInfo(part_->dir).canonicalFilePath() != routerPart) {
    setLayers({});
    setEmptyState(QString("Router %1 was trained on partition %2, not on the picked partition %3.\n\nPick %2, or an "
                          "oracle router (the oracle routes any partition).")
                      .arg(router_->name, QFileInfo(router_->partitionPath).fileName(), part_->name));
    return;
  }
  if (!rec_->hasSamples() || rec_->samples().count() == 0) {
    setLayers({});
    setEmptyState(
        "This recording kept no sampled tokens (samples.safetensors), which the router view needs.\n"
        "Record again with --samples > 0.");
    return;
  }
  std::vector<int> layers;
  std::vector<Site> sites;
  for (int L : rec_->layers)
    if (part_->labels.count(L) &&
        (!router_ || std::find(router_->layers.begin(), router_->layers.end(), L) != router_->layers.end()))
      layers.push_back(L), sites.push_back(rec_->siteOf(L));
  setLayers(layers, sites);
  const int L = layer();
  if (L < 0 || part_->dFF != rec_->widthOf(L)) {
    setEmptyState(QString("The partition %1 does not fit the recording (d_ff %2 vs %3, or no common layer).")
                      .arg(part_->name)
                      .arg(part_->dFF)
                      .arg(L < 0 ? rec_->dFF : rec_->widthOf(L)));
    return;
  }
  const auto& smp = rec_->samples(L);
  const int S = static_cast<int>(smp.count());
  E_ = part_->experts;
  k_ = std::clamp(router_ ? router_->topKFor(L) : std::max(1, E_ / 4), 1, E_);
  // Scores, top-k and oracle top-k come from the core (analysis/route/router_scores.h),
  // the same function `moefy route` and the MoE FFN use.
  RouterChoices choices;
  try {
    choices = routeRecordedSamples(*rec_, router_.get(), *part_, L, k_);
  } catch (const std::exception& e) {
    ctx()->report(StudioContext::Error, e.what());
    setEmptyState(QString("Cannot compute router scores:\n%1").arg(e.what()));
    return;
  }
  setEmptyState("");
  const bool typedOk = typedTextSite(L);
  text_->setEnabled(typedOk);
  if (textRunning_ && !ctx()->tasks()->isRunning("router-text"))
    textRunning_ = false;  // cancelled with a workspace change
  runText_->setEnabled(typedOk && !textRunning_);
  textNoteAction_->setVisible(!typedOk);
  textNote_->setText(
      typedOk ? QString()
              : QString("  typed text: whole-FFN sites only (%1 is a native expert; it shows the recorded samples)")
                    .arg(rec_->siteText(L)));
  score_ = std::move(choices.scores);
  top_ = std::move(choices.top);
  oracleTop_ = std::move(choices.oracleTop);
  choices.top = top_;

  textScore_.clear();
  textTop_.clear();
  textOracleTop_.clear();
  fillDocuments();
  if (!textRan_.isEmpty() && typedOk) {
    if (textLayer_ == L && !textAct_.ids.empty())
      scoreTypedText();
    else
      runText(textRan_);
  }

  // Expert usage over all samples, sorted, log scale.
  const std::vector<double> use = expertUsage(choices);
  std::vector<int> order(E_);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return use[a] > use[b]; });
  usage_->clearPlottables();
  auto* bars = new QCPBars(usage_->xAxis, usage_->yAxis);
  QVector<double> x, y;
  int dead = 0;
  for (int r = 0; r < E_; ++r) {
    x << r;
    y << std::max(use[order[r]], 1e-4);
    if (use[order[r]] == 0) ++dead;
  }
  bars->setData(x, y);
  bars->setWidth(0.8);
  bars->setPen(Qt::NoPen);
  bars->setBrush(mapColor(ColorMap::Viridis, 0.35));
  usage_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  usage_->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
  usage_->yAxis->setNumberFormat("gb");
  usage_->yAxis->setRange(1e-4 * 0.8, 1.2);
  usage_->xAxis->setRange(-0.7, E_ - 0.3);
  {
    // Bars are ranks; label each with its expert id.
    QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
    int step = E_ <= 20 ? 1 : E_ <= 40 ? 2 : E_ <= 64 ? 4 : E_ / 16;
    for (int r = 0; r < E_; r += step) t->addTick(r, QString::number(order[r]));
    usage_->xAxis->setTicker(t);
    usage_->xAxis->setTickLabelFont(figureFont(E_ > 12 ? 7 : 8));
  }
  // Two lines: one would be wider than the plot at the default window size and clip.
  usage_->xAxis->setLabel(QString("expert id, sorted by usage\n(%1 of %2 never chosen)").arg(dead).arg(E_));
  fitAxisLabel(usage_->yAxis, kUsageYLabels);  // and after every layout: never longer than the axis
  usage_->replot();

  // Category x expert usage heatmap.
  cats_->clearPlottables();
  for (int i = cats_->plotLayout()->elementCount() - 1; i >= 0; --i)
    if (qobject_cast<QCPColorScale*>(cats_->plotLayout()->elementAt(i))) cats_->plotLayout()->removeAt(i);
  cats_->plotLayout()->simplify();
  const int C = std::max(1, static_cast<int>(rec_->categories.size()));
  const CategoryUsage catUse = categoryUsage(choices, smp.category, C);
  std::vector<double> ct(C, 0.0);
  for (int c = 0; c < C; ++c) ct[c] = static_cast<double>(catUse.tokensPerCategory[c]);
  // Only categories with sampled tokens get a row (a recording of the first
  // N tokens of a category-sorted corpus may cover just a few of them).
  std::vector<int> shownCats;
  for (int c = 0; c < C; ++c)
    if (ct[c] > 0) shownCats.push_back(c);
  if (shownCats.empty()) shownCats.push_back(0);
  const int CR = static_cast<int>(shownCats.size());
  auto* cmap = new QCPColorMap(cats_->xAxis, cats_->yAxis);
  // QCPColorMapData puts cell centres at the range ends, so a single row is
  // drawn as two identical half-height rows centred on 0.
  const int dataRows = CR == 1 ? 2 : CR;
  cmap->data()->setSize(E_, dataRows);
  cmap->data()->setRange(QCPRange(0, E_ - 1), CR == 1 ? QCPRange(-0.25, 0.25) : QCPRange(0, CR - 1));
  for (int r = 0; r < dataRows; ++r) {
    const int c = shownCats[CR == 1 ? 0 : r];
    for (int e = 0; e < E_; ++e) cmap->data()->setCell(e, r, catUse.share[size_t(c) * E_ + e]);
  }
  auto* cs = new QCPColorScale(cats_);
  cats_->plotLayout()->addElement(1, 1, cs);
  cs->setType(QCPAxis::atRight);
  cmap->setColorScale(cs);
  cmap->setGradient(gradient(ColorMap::Viridis));
  cmap->rescaleDataRange(true);
  cs->axis()->setLabel("share of category's tokens");
  cs->axis()->setLabelFont(figureFont(9));
  cs->axis()->setTickLabelFont(figureFont(8));
  cs->setBarWidth(10);
  QSharedPointer<QCPAxisTickerText> ct2(new QCPAxisTickerText);
  for (int r = 0; r < CR; ++r) {
    const int c = shownCats[r];
    ct2->addTick(r, c < rec_->categories.size() ? rec_->categories[c] : QString::number(c));
  }
  cats_->yAxis->setTicker(ct2);
  cats_->yAxis->setTickLabelFont(figureFont(CR > 10 ? 7 : 8));
  cats_->yAxis->setLabel(QString());
  cats_->xAxis->setLabel("expert");
  cats_->xAxis->setTicker(integerTicker(E_, true));
  cmap->setInterpolate(false);
  cats_->xAxis->setRange(-0.5, E_ - 0.5);
  cats_->yAxis->setRange(-0.5, CR - 0.5);
  cats_->replot();
  note_->setText(
      QString("Router %1 (%2), partition %3, %4: top-%5 of %6 experts on %7 sampled tokens. "
              "Red dots: the router's top-k; white squares: the oracle's top-k. Dead experts: %8 of %9 (%10%). "
              "Click a column to select an expert.%11")
          .arg(router_ ? router_->name : QString("none: oracle scores"))
          .arg(router_ ? router_->kind : QString("oracle"))
          .arg(part_->name)
          .arg(rec_->siteText(L))
          .arg(k_)
          .arg(E_)
          .arg(S)
          .arg(dead)
          .arg(E_)
          .arg(100.0 * dead / E_, 0, 'f', 1)
          .arg(CR < C ? QString(" The samples cover %1 of the corpus's %2 categories; the others are left out of "
                                "the category heatmap.")
                            .arg(CR)
                            .arg(C)
                      : QString()));
  drawDiagnostics(choices);
  redrawDocument();
}

void RouterView::showDiagnostics(bool on) { panelTabs_->setCurrentIndex(on ? 1 : 0); }

bool RouterView::diagnosticsShown() const { return pages_->currentIndex() == 1; }

QWidget* RouterView::figureRoot() { return pages_->currentWidget(); }

QString RouterView::figureBaseName() const {
  QString base = FigureView::figureBaseName();  // router-choices[-L2 | -dec.blk.1]
  if (diagnosticsShown() && base.startsWith("router-choices")) base.replace(0, 14, "router-diagnostics");
  return base;
}

QString RouterView::diagnosticsCaption() const { return diagCaption_->text(); }

void RouterView::drawDiagnostics(const RouterChoices& choices) {
  const int L = layer();
  const QString site = rec_ ? rec_->siteText(L) : siteName();
  // Load balance of the shown choices (the usage plot's selections), by the
  // core's usageHealth, as the Experts view's caption gives it for native MoEs.
  balanceOk_ = false;
  balanceNote_.clear();
  try {
    balance_ = routerLoadBalance(choices);
    balanceOk_ = true;
  } catch (const std::exception& e) {
    balance_ = LoadBalance();
    balanceNote_ = QString::fromStdString(e.what());
  }
  if (router_ && !router_->reportError.isEmpty() && reportedDiagError_ != router_->dir) {
    reportedDiagError_ = router_->dir;  // once per router, not on every redraw
    ctx()->report(StudioContext::Warning, "Router diagnostics: " + router_->reportError);
  }
  drawTrainingCurves(router_ ? router_->reportFor(L) : nullptr, site);
  drawSiteMetrics();

  QStringList cap;
  if (balanceOk_)
    cap << QString(
               "Load balance at %1 (top-%2 of %3 experts on %4 sampled tokens): usage perplexity exp(H)/E = %5 "
               "(1 = every expert chosen equally often), dead experts %6 of %7 (%8 %).")
               .arg(site)
               .arg(k_)
               .arg(balance_.experts)
               .arg(balance_.tokens)
               .arg(balance_.perplexity, 0, 'f', 3)
               .arg(balance_.dead)
               .arg(balance_.experts)
               .arg(100.0 * balance_.deadShare, 0, 'f', 1);
  else
    cap << QString("Load balance at %1: unknown (%2).").arg(site, balanceNote_);
  if (!router_)
    cap << "No router picked: the choices are the oracle's (no training, no metrics); pick a router for its "
           "diagnostics.";
  else if (!router_->reportError.isEmpty())
    cap << "The training and metrics of router.json cannot be read: " + router_->reportError;
  else
    cap << QString(
        "Mass recall: the oracle expert mass the router's top-k captures over the oracle top-k's; "
        "overlap: the share of the router's top-k among the oracle's; both measured by moefy route on "
        "its held-out samples (router.json). Click a site's bars to pick it.");
  diagCaption_->setText(cap.join(' '));
}

void RouterView::drawTrainingCurves(const Router::SiteReport* report, const QString& site) {
  train_->clearGraphs();
  train_->clearItems();
  const QString kind = router_ ? router_->kind : QString("oracle");
  const bool curves = router_ && router_->trained && report && !report->trainLoss.empty();
  if (!curves) {
    // Why there is nothing to draw, in the plot (kept in exports).
    if (!router_)
      trainNote_ = "No router picked (oracle scores):\nno training";
    else if (!router_->reportError.isEmpty())
      trainNote_ = "router.json's training block\ncannot be read (see the caption)";
    else if (!router_->trained)
      trainNote_ = QString("%1 router: no training\n(%2)")
                       .arg(kind, kind == "oracle" ? "it scores experts by the dense hidden's mass"
                                                   : "its centroids come from the FFN weights");
    else
      trainNote_ = QString("no training recorded for %1\nin router.json").arg(site);
    addPlotNote(train_, trainNote_);
    trainCaption_->setText(QString("%1, %2").arg(site, kind));
    train_->legend->setVisible(false);
    train_->xAxis->setTicker(integerTicker(1));
    train_->xAxis->setRange(0.5, 1.5);
    train_->yAxis->setRange(0, 1);
    train_->yAxis->setLabel("loss");
    train_->replot();
    return;
  }
  trainNote_.clear();
  const int epochs = static_cast<int>(report->trainLoss.size());
  QVector<double> x, tr, he;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  bool anyHeld = false;
  for (int e = 0; e < epochs; ++e) {
    const double t = report->trainLoss[static_cast<size_t>(e)];
    const double h = static_cast<size_t>(e) < report->heldOutLoss.size() ? report->heldOutLoss[static_cast<size_t>(e)]
                                                                         : std::numeric_limits<double>::quiet_NaN();
    x << e + 1;
    tr << t;  // NaN (a mean over no samples) leaves a gap
    he << h;
    for (double v : {t, h})
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    anyHeld |= std::isfinite(h);
  }
  auto* train = train_->addGraph();
  train->setName("training");
  train->setData(x, tr, true);
  train->setPen(QPen(seriesColor(0), 2, seriesDash(0)));
  train->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, seriesColor(0), seriesColor(0), 5));
  auto* held = train_->addGraph();
  held->setName(anyHeld ? QString("held-out") : QString("held-out (none: --held-out 0)"));
  held->setData(x, he, true);
  held->setPen(QPen(seriesColor(1), 2, seriesDash(1)));
  held->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssSquare, seriesColor(1), Qt::white, 6));
  if (!(hi >= lo)) lo = 0, hi = 1;
  const double pad = hi > lo ? 0.08 * (hi - lo) : 0.05 * std::max(std::abs(hi), 1e-3);
  train_->yAxis->setRange(lo - pad, hi + pad);
  train_->xAxis->setTicker(integerTicker(epochs));
  train_->xAxis->setRange(0.5, epochs + 0.5);
  train_->yAxis->setLabel(QString("loss (%1)").arg(router_->lossName));
  trainCaption_->setText(QString("%1, %2 router, %3 epoch%4").arg(site, kind).arg(epochs).arg(epochs == 1 ? "" : "s"));
  train_->legend->setVisible(true);
  train_->replot();
}

void RouterView::drawSiteMetrics() {
  siteMetrics_->clearPlottables();
  siteMetrics_->clearItems();
  diagSites_.clear();
  diagLayers_.clear();
  diagPicked_ = -1;
  const int L = layer();
  const int n = router_ ? static_cast<int>(router_->layers.size()) : 0;
  QSharedPointer<QCPAxisTickerText> ticks(new QCPAxisTickerText);
  // Site names on the axis; with many sites every n-th (about 24 fit standing up).
  const int step = std::max(1, static_cast<int>(std::ceil(n / 24.0)));
  for (int i = 0; i < n; ++i) {
    const Site s = i < static_cast<int>(router_->sites.size()) ? router_->sites[static_cast<size_t>(i)]
                                                               : Site::ofLayer(router_->layers[static_cast<size_t>(i)]);
    diagSites_ << QString::fromStdString(s.name());
    diagLayers_.push_back(router_->layers[static_cast<size_t>(i)]);
    if (router_->layers[static_cast<size_t>(i)] == L) diagPicked_ = i;
    if (i % step == 0) ticks->addTick(i, diagSites_.back());
  }
  QCPBars* bars[2] = {new QCPBars(siteMetrics_->xAxis, siteMetrics_->yAxis),
                      new QCPBars(siteMetrics_->xAxis, siteMetrics_->yAxis)};
  const char* names[2] = {"mass recall", "overlap"};
  for (int b = 0; b < 2; ++b) {
    bars[b]->setName(names[b]);
    bars[b]->setWidth(0.38);
    bars[b]->setPen(Qt::NoPen);
    // Dark and light on one lightness-monotone map: apart in greyscale too.
    bars[b]->setBrush(mapColor(ColorMap::Viridis, b == 0 ? 0.25 : 0.75));
    bars[b]->setBarsGroup(metricsGroup_);
  }
  int missing = 0;
  if (router_ && router_->reportError.isEmpty()) {
    for (int i = 0; i < n; ++i) {
      const Router::SiteReport* r = router_->reportFor(diagLayers_[static_cast<size_t>(i)]);
      const double v[2] = {r ? r->massRecall : std::numeric_limits<double>::quiet_NaN(),
                           r ? r->overlap : std::numeric_limits<double>::quiet_NaN()};
      for (int b = 0; b < 2; ++b)
        if (std::isfinite(v[b])) bars[b]->addData(i, v[b]);  // a site without metrics has no bar
      missing += std::isfinite(v[0]) && std::isfinite(v[1]) ? 0 : 1;
    }
  }
  if (diagPicked_ >= 0) {
    // The picked site: a band behind its bars, in the selection colour.
    auto* band = new QCPItemRect(siteMetrics_);
    band->setLayer("grid");
    band->topLeft->setCoords(diagPicked_ - 0.5, 1.3);
    band->bottomRight->setCoords(diagPicked_ + 0.5, 0);
    band->setPen(QPen(QColor(230, 60, 30), 1.5));
    band->setBrush(QColor(230, 60, 30, 40));
  }
  if (n == 0 || (router_ && !router_->reportError.isEmpty()) || missing == n) {
    addPlotNote(siteMetrics_, !router_                          ? QString("No router picked:\nno metrics")
                              : !router_->reportError.isEmpty() ? QString("router.json's metrics\ncannot be read")
                                                                : QString("router.json has\nno metrics"));
  }
  siteMetrics_->xAxis->setTicker(ticks);
  siteMetrics_->xAxis->setTickLabelRotation(n > 5 ? -90 : 0);
  siteMetrics_->xAxis->setTickLabelFont(figureFont(n > 8 ? 7 : 8));
  siteMetrics_->xAxis->setRange(-0.6, std::max(1, n) - 0.4);
  siteMetrics_->xAxis->setLabel(diagPicked_ >= 0 ? QString("site (picked: %1, outlined)").arg(diagSites_[diagPicked_])
                                                 : QString("site"));
  // Up to 1.3 so that the legend above the bars leaves them visible; ticks
  // only on [0, 1], where both shares lie.
  QSharedPointer<QCPAxisTickerText> y(new QCPAxisTickerText);
  for (int t = 0; t <= 5; ++t) y->addTick(0.2 * t, QString::number(0.2 * t, 'g', 2));
  siteMetrics_->yAxis->setTicker(y);
  siteMetrics_->yAxis->setRange(0, 1.3);
  siteMetrics_->yAxis->setLabel("share (held-out samples)");
  siteMetrics_->legend->setVisible(n > 0);
  siteMetrics_->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  siteMetrics_->replot();
}

void RouterView::fillDocuments() {
  const auto& smp = rec_->samples(layer());
  const int S = static_cast<int>(smp.count());
  std::map<int64_t, int> perDoc;
  for (int s = 0; s < S; ++s) ++perDoc[smp.docId[s]];
  QVariant keep = doc_->currentData();
  doc_->blockSignals(true);
  doc_->clear();
  if (!textAct_.ids.empty()) {
    QString t = textRan_.simplified();
    if (t.size() > 32) t = t.left(31) + QChar(0x2026);
    if (textAct_.decoderRows) {
      QString tr = QString::fromStdString(textAct_.translation).simplified();
      if (tr.size() > 32) tr = tr.left(31) + QChar(0x2026);
      doc_->addItem(
          QString("typed source, translation: \u201c%1\u201d (%2 decoder tokens)").arg(tr).arg(textAct_.ids.size()),
          QVariant(QString("typed")));
    } else {
      doc_->addItem(QString("typed text: \u201c%1\u201d (%2 tokens)").arg(t).arg(textAct_.ids.size()),
                    QVariant(QString("typed")));
    }
  }
  std::vector<std::pair<int, int64_t>> byCount;
  for (auto [d, n] : perDoc) byCount.push_back({-n, d});
  std::sort(byCount.begin(), byCount.end());
  for (auto [negN, d] : byCount) {
    int cat = -1;
    for (int s = 0; s < S; ++s)
      if (smp.docId[s] == d) {
        cat = smp.category[s];
        break;
      }
    QString c = cat >= 0 && cat < rec_->categories.size() ? rec_->categories[cat] : QString("-");
    doc_->addItem(QString("doc %1 (%2, %3 sampled tokens)").arg(d).arg(c).arg(-negN),
                  QVariant::fromValue<qlonglong>(d));
  }
  int ki = doc_->findData(keep);
  doc_->setCurrentIndex(ki >= 0 ? ki : 0);
  doc_->blockSignals(false);
}

bool RouterView::typedTextSite(int layer) const {
  if (!rec_) return true;
  const Site s = rec_->siteOf(layer);  // typed text runs whole-FFN sites (single-stack and T5), not native experts
  return s.expert < 0 && !s.shared;
}

bool RouterView::showingTypedText() const { return doc_->currentData().toString() == "typed"; }

void RouterView::runText(const QString& text) {
  if (text.trimmed().isEmpty()) {
    ctx()->report(StudioContext::Warning, "Router: type a text first");
    return;
  }
  if (!ctx()->hasWorkspace() || !part_ || E_ <= 0 || layer() < 0) {
    ctx()->report(StudioContext::Warning, "Router: a typed text needs a partition (and a router) for the picked layer");
    return;
  }
  if (!typedTextSite(layer())) {
    ctx()->report(StudioContext::Warning,
                  "Router: a typed text runs whole-FFN sites; " + siteName() + " shows the recorded samples only");
    return;
  }
  const QString dir = ctx()->workspace().model();
  const int L = layer();
  const Site site = rec_ ? rec_->siteOf(L) : Site::ofLayer(L);
  // The workspace's shared model (loaded once for every view and task); the
  // run is a studio task that a newer text or layer supersedes.
  std::shared_ptr<const SharedModel> model = ctx()->sharedModel();
  textRunning_ = true;
  runText_->setEnabled(false);
  if (text_->text() != text) text_->setText(text);
  QPointer<RouterView> self(this);
  ctx()->tasks()->run(
      "router-text", this,
      [self, model, dir, L, site, text](JobContext& job) -> std::function<void()> {
        job.setStage("route typed text");
        TextActivations act = TextProbe::open(model)->run(text, site);
        job.checkCancel();
        return [self, dir, L, text, act]() mutable {
          if (!self) return;
          self->textRunning_ = false;
          self->runText_->setEnabled(true);
          self->textRan_ = text;
          self->textModel_ = dir;
          self->textLayer_ = L;
          self->textAct_ = std::move(act);
          if (!self->rec_ || !self->part_) return;
          self->fillDocuments();
          self->doc_->blockSignals(true);
          self->doc_->setCurrentIndex(self->doc_->findData(QVariant(QString("typed"))));
          self->doc_->blockSignals(false);
          if (self->layer() == L)
            self->scoreTypedText();
          else
            self->runText(text);
        };
      },
      [self](const QString& err) {
        if (!self) return;
        self->textRunning_ = false;
        self->runText_->setEnabled(true);
        self->ctx()->report(StudioContext::Error, "Router: cannot route the typed text: " + err);
      });
}

void RouterView::scoreTypedText() {
  textScore_.clear();
  textTop_.clear();
  textOracleTop_.clear();
  const int T = static_cast<int>(textAct_.ids.size());
  if (!part_ || T == 0 || textLayer_ != layer()) return;
  const int L = textLayer_;
  try {
    if (textAct_.dFF != part_->dFF)
      throw std::runtime_error(QString("the model's d_ff %1 does not match the partition's %2")
                                   .arg(textAct_.dFF)
                                   .arg(part_->dFF)
                                   .toStdString());
    RouterChoices c = routeTypedText(textAct_, router_.get(), *part_, L, k_);
    textScore_ = std::move(c.scores);
    textTop_ = std::move(c.top);
    textOracleTop_ = std::move(c.oracleTop);
  } catch (const std::exception& e) {
    textScore_.clear();
    ctx()->report(StudioContext::Error, QString("Router: cannot score the typed text: %1").arg(e.what()));
  }
  redrawDocument();
}

void RouterView::redrawDocument() {
  if (score_.empty() || !rec_) return;
  // The rows to draw: a recorded document's sampled tokens, or the typed text.
  struct Row {
    const float* score;
    const int* top;
    const int* oracle;
    int32_t id;
    int position;
  };
  std::vector<Row> rows;
  const bool typed = showingTypedText();
  if (typed) {
    if (textScore_.size() != textAct_.ids.size() * size_t(E_)) return;  // being recomputed
    const int T = static_cast<int>(textAct_.ids.size());
    for (int t = 0; t < T; ++t)
      rows.push_back({textScore_.data() + size_t(t) * E_, textTop_.data() + size_t(t) * k_,
                      textOracleTop_.data() + size_t(t) * k_, textAct_.ids[t], t});
  } else {
    const auto& smp = rec_->samples(layer());
    const int S = static_cast<int>(smp.count());
    int64_t d = doc_->currentData().toLongLong();
    docRows_.clear();
    for (int s = 0; s < S; ++s)
      if (smp.docId[s] == d) docRows_.push_back(s);
    std::sort(docRows_.begin(), docRows_.end(), [&](int a, int b) { return smp.position[a] < smp.position[b]; });
    docSampled_ = static_cast<int>(docRows_.size());
    if (docRows_.size() > 48) docRows_.resize(48);
    for (int s : docRows_)
      rows.push_back({score_.data() + size_t(s) * E_, top_.data() + size_t(s) * k_, oracleTop_.data() + size_t(s) * k_,
                      smp.tokenId[s], smp.position[s]});
  }
  const int T = static_cast<int>(rows.size());
  shownRows_ = T;
  scores_->clearPlottables();
  for (int i = scores_->plotLayout()->elementCount() - 1; i >= 0; --i)
    if (qobject_cast<QCPColorScale*>(scores_->plotLayout()->elementAt(i))) scores_->plotLayout()->removeAt(i);
  scores_->plotLayout()->simplify();
  auto* map = new QCPColorMap(scores_->xAxis, scores_->yAxis);
  map->setInterpolate(false);
  // One row (a one-token text) is drawn as two half-height rows centred on 0:
  // QCPColorMapData puts cell centres at the range ends.
  map->data()->setSize(E_, T <= 1 ? 2 : T);
  map->data()->setRange(QCPRange(0, E_ - 1), T <= 1 ? QCPRange(-0.25, 0.25) : QCPRange(0, T - 1));
  QVector<double> cx, cy, ox, oy;
  QSharedPointer<FittingTextTicker> ytick(new FittingTextTicker(scores_->yAxis));
  const QFontMetrics labelMetrics(figureFont(8));
  std::vector<TokenStrip::Tok> toks;
  for (int t = 0; t < T; ++t) {
    const Row& rw = rows[t];
    const float* row = rw.score;
    float lo = *std::min_element(row, row + E_), hi = *std::max_element(row, row + E_);
    for (int e = 0; e < E_; ++e) {
      map->data()->setCell(e, t, hi > lo ? (row[e] - lo) / (hi - lo) : 0.0);
      if (T == 1) map->data()->setCell(e, 1, hi > lo ? (row[e] - lo) / (hi - lo) : 0.0);
    }
    for (int j = 0; j < k_; ++j) {
      cx << rw.top[j], cy << t;
      ox << rw.oracle[j], oy << t;
    }
    QString tok = ctx()->tokenText(rw.id).replace('\n', "\\n");
    // Long tokens (byte-level pieces, URLs) are elided, the position kept.
    const QString shown = tok.trimmed().isEmpty() ? QString("\u2423") : tok.trimmed();
    ytick->addTick(t, QString("%1 @%2").arg(labelMetrics.elidedText(shown, Qt::ElideRight, 90)).arg(rw.position));
    toks.push_back({tok, rw.top[0]});
  }
  auto* cs = new QCPColorScale(scores_);
  scores_->plotLayout()->addElement(1, 1, cs);
  cs->setType(QCPAxis::atRight);
  map->setColorScale(cs);
  map->setGradient(gradient(ColorMap::Cividis));
  map->setDataRange(QCPRange(0, 1));
  cs->axis()->setLabel("score (min-max per token)");
  cs->axis()->setLabelFont(figureFont(9));
  cs->axis()->setTickLabelFont(figureFont(8));
  cs->setBarWidth(10);
  auto* chosen = scores_->addGraph();
  chosen->setData(cx, cy);
  chosen->setLineStyle(QCPGraph::lsNone);
  chosen->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, QColor(230, 60, 30), QColor(230, 60, 30), 5));
  chosen->setName("router top-k");
  auto* orc = scores_->addGraph();
  orc->setData(ox, oy);
  orc->setLineStyle(QCPGraph::lsNone);
  orc->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssSquare, QPen(Qt::white, 1.5), Qt::NoBrush, 11));
  orc->setName("oracle top-k");
  scores_->yAxis->setTicker(ytick);
  scores_->yAxis->setTickLabelFont(figureFont(8));  // readable at every row count: the ticker thins instead
  scores_->yAxis->setRangeReversed(true);
  scores_->yAxis->setRange(-0.5, std::max(1, T) - 0.5);
  scores_->xAxis->setRange(-0.5, E_ - 0.5);
  scores_->xAxis->setLabel(
      QString("expert (%1)").arg(rec_ ? rec_->siteText(layer()) : QString("layer %1").arg(layer())));
  // A document with more sampled tokens than rows fit shows its first 48, and says so.
  scores_->yAxis->setLabel(
      typed             ? QString(textAct_.decoderRows ? "generated token @ decoder step" : "typed token @ position")
      : docSampled_ > T ? QString("sampled token @ position (first %1 of %2)").arg(T).arg(docSampled_)
                        : QString("sampled token @ position"));
  scores_->legend->setVisible(false);
  scores_->xAxis->setTicker(integerTicker(E_));
  scores_->clearItems();
  int sel = ctx()->selectedLayer() == layer() ? ctx()->selectedExpert() : -1;
  if (sel >= 0 && sel < E_) {
    auto* r = new QCPItemRect(scores_);
    r->topLeft->setCoords(sel - 0.5, -0.5);
    r->bottomRight->setCoords(sel + 0.5, T - 0.5);
    r->setPen(QPen(QColor(230, 60, 30), 2));
  }
  scores_->replot();
  strip_->setTokens(std::move(toks), E_,
                    typed ? (textAct_.decoderRows
                                 ? QString("Translation: \u201c%1\u201d; its decoder tokens coloured by the router's "
                                           "top expert (number = expert id):")
                                       .arg(QString::fromStdString(textAct_.translation))
                             : textAct_.translation.empty()
                                 ? QString("Typed text, tokens coloured by the router's top expert (number = "
                                           "expert id):")
                                 : QString("Typed source (translation: \u201c%1\u201d), its tokens coloured by the "
                                           "router's top expert (number = expert id):")
                                       .arg(QString::fromStdString(textAct_.translation)))
                          : QString("Sampled tokens coloured by the router's top expert (number = expert id):"));
}

QString RouterView::csvData() const {
  QString out = "sample,doc_id,position,token_id,category";
  for (int e = 0; e < E_; ++e) out += QString(",score_e%1").arg(e);
  out += ",router_topk,oracle_topk\n";
  if (!score_.empty() && rec_) {
    const auto& smp = rec_->samples(layer());
    for (int s = 0; s < smp.count(); ++s) {
      out += QString("%1,%2,%3,%4,%5")
                 .arg(s)
                 .arg(smp.docId[s])
                 .arg(smp.position[s])
                 .arg(smp.tokenId[s])
                 .arg(smp.category[s]);
      for (int e = 0; e < E_; ++e) out += "," + QString::number(score_[size_t(s) * E_ + e], 'g', 7);
      QStringList a, b;
      for (int j = 0; j < k_; ++j)
        a << QString::number(top_[size_t(s) * k_ + j]), b << QString::number(oracleTop_[size_t(s) * k_ + j]);
      out += "," + a.join(' ') + "," + b.join(' ') + "\n";
    }
  }
  // The diagnostics (after a blank line each, as the Partitions view's CSV):
  // the router's metrics at every site, then the picked site's losses per epoch.
  auto num = [](double v) { return std::isfinite(v) ? QString::number(v, 'g', 10) : QString(); };
  const QString name = router_ ? router_->name : QString();
  out += "\nrouter,site,mass_recall,overlap,samples,mean_k,picked\n";
  if (router_)
    for (size_t i = 0; i < router_->layers.size(); ++i) {
      const Router::SiteReport* r = router_->reportFor(router_->layers[i]);
      const Site site = i < router_->sites.size() ? router_->sites[i] : Site::ofLayer(router_->layers[i]);
      out += QString("%1,%2,%3,%4,%5,%6,%7\n")
                 .arg(name, QString::fromStdString(site.name()), r ? num(r->massRecall) : QString(),
                      r ? num(r->overlap) : QString(), r ? QString::number(r->samples) : QString(),
                      r ? num(r->meanK) : QString())
                 .arg(router_->layers[i] == layer() ? 1 : 0);
    }
  out += "\nrouter,site,epoch,train_loss,held_out_loss\n";
  if (const Router::SiteReport* r = router_ && router_->trained ? router_->reportFor(layer()) : nullptr)
    for (size_t e = 0; e < r->trainLoss.size(); ++e)
      out += QString("%1,%2,%3,%4,%5\n")
                 .arg(name, siteName())
                 .arg(e + 1)
                 .arg(num(r->trainLoss[e]),
                      num(e < r->heldOutLoss.size() ? r->heldOutLoss[e] : std::numeric_limits<double>::quiet_NaN()));
  return out;
}

}  // namespace moefy::views
