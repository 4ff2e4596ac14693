#include "views/qcp.h"

#include <QGridLayout>
#include <QLineEdit>
#include <QPainter>
#include <QPointer>
#include <QPushButton>
#include <algorithm>
#include <cmath>
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
  auto* g = new QGridLayout(body());
  g->setContentsMargins(6, 6, 6, 6);
  scores_ = plotWithTitle(body(), "Router scores per token");
  // The token ticker thins its labels by the geometry of the previous layout:
  // after a resize one more replot brings them in line with the new one.
  connect(scores_, &QCustomPlot::afterReplot, this, [this] {
    auto t = scores_->yAxis->ticker().dynamicCast<FittingTextTicker>();
    if (t && t->strideUsed() != t->strideNow()) scores_->replot(QCustomPlot::rpQueuedReplot);
  });
  usage_ = plotWithTitle(body(), "Expert usage");
  cats_ = plotWithTitle(body(), "Expert usage by category");
  strip_ = new TokenStrip(body());
  note_ = new QLabel(body());
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
  usage_->yAxis->setLabel("share of tokens routed");
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
  redrawDocument();
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
  scores_->yAxis->setLabel(typed ? (textAct_.decoderRows ? "generated token @ decoder step" : "typed token @ position")
                                 : "sampled token @ position");
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
  if (score_.empty() || !rec_) return out;
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
  return out;
}

}  // namespace moefy::views
