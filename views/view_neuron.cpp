#include "views/view_neuron.h"

#include "views/qcp.h"

#include <QEvent>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QHelpEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QPointer>
#include <QStackedWidget>
#include <QTabBar>
#include <QTabWidget>
#include <QTableWidget>
#include <QToolTip>
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <numeric>

#include "analysis/jobs/job.h"
#include "analysis/record/sample_context.h"
#include "analysis/route/router_scores.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "views/context.h"
#include "views/jobrunner.h"
#include "views/style.h"
#include "views/view_corpus.h"

namespace moefy::views {

namespace {

constexpr int kContexts = 10;    // top-activating samples shown
constexpr int kBefore = 12;      // context tokens before the sampled one
constexpr int kAfter = 4;        // and after it
constexpr int kNeighbours = 10;  // co-activating neighbours listed
constexpr int kHistogramBins = 30;

const char* kSamplesTask = "neuron-page-samples";
const char* kContextsTask = "neuron-page-contexts";
const char* kRoutingTask = "neuron-page-routing";

QCustomPlot* titledPlot(QWidget* parent, const QString& title, const QString& name) {
  auto* p = new QCustomPlot(parent);
  p->setObjectName(name);
  p->plotLayout()->insertRow(0);
  p->plotLayout()->addElement(0, 0, new QCPTextElement(p, title, QFont(figureFont(10).family(), 10, QFont::Bold)));
  applyPublicationStyle(p);
  p->setMinimumSize(200, 110);
  return p;
}

QTableWidget* compactTable(QWidget* parent, const QString& name, const QStringList& headers) {
  auto* t = new QTableWidget(parent);
  t->setObjectName(name);
  t->setColumnCount(static_cast<int>(headers.size()));
  t->setHorizontalHeaderLabels(headers);
  t->verticalHeader()->setVisible(false);
  t->verticalHeader()->setDefaultSectionSize(QFontMetrics(t->font()).height() + 4);
  t->setEditTriggers(QAbstractItemView::NoEditTriggers);
  t->setSelectionBehavior(QAbstractItemView::SelectRows);
  t->setSelectionMode(QAbstractItemView::SingleSelection);
  // Columns share the width: no horizontal scroll bar at 1366x768.
  t->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  t->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  t->setMinimumSize(160, 80);
  return t;
}

QTableWidgetItem* numberItem(double v, const QString& text, int neuron = -1) {
  auto* it = new QTableWidgetItem(text);
  it->setData(Qt::UserRole, neuron);
  it->setData(Qt::UserRole + 1, v);
  it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
  return it;
}

QString percent(double share, int decimals = 1) { return QString("%1%").arg(100.0 * share, 0, 'f', decimals); }

QString csvText(QString s) {
  if (s.contains(',') || s.contains('"') || s.contains('\n')) s = "\"" + s.replace('"', "\"\"") + "\"";
  return s;
}

}  // namespace

// ------------------------------------------------------------ ContextStrip

/// The top-activating contexts, one row each: the recorded activation, then
/// the context's tokens on backgrounds shaded by the neuron's activation, the
/// sampled token bold and framed. Custom-painted, so the figure exports draw
/// it (the "vectorFigure" property). A click on a row calls onClick(row).
class ContextStrip : public QWidget {
 public:
  explicit ContextStrip(QWidget* parent) : QWidget(parent) {
    setObjectName("neuronContexts");
    setProperty("vectorFigure", true);
    setMouseTracking(true);
    setAttribute(Qt::WA_OpaquePaintEvent);
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
  }
  std::function<void(int)> onClick;

  void setRows(const std::vector<NeuronView::Context>* rows, const QString& empty) {
    rows_ = rows;
    empty_ = empty;
    top_ = 0;
    if (rows_)
      for (const auto& c : *rows_)
        for (float v : c.act) top_ = std::max(top_, static_cast<double>(v));
    update();
  }
  double scaleMax() const { return top_; }
  int rowHeight() const { return QFontMetrics(tokenFont(false)).height() + 6; }
  int titleHeight() const { return QFontMetrics(titleFont()).height() + 6; }
  QRect rowRect(int i) const { return QRect(0, titleHeight() + i * rowHeight(), width(), rowHeight()); }
  QSize minimumSizeHint() const override { return {240, titleHeight() + 4 * rowHeight()}; }
  QSize sizeHint() const override { return {480, titleHeight() + kContexts * rowHeight() + 4}; }

 protected:
  void paintEvent(QPaintEvent*) override {
    QPainter p(this);
    p.fillRect(rect(), Qt::white);
    p.setFont(titleFont());
    p.setPen(Qt::black);
    p.drawText(QRect(0, 0, width(), titleHeight()), Qt::AlignCenter,
               p.fontMetrics().elidedText("Top-activating contexts (click one to open its document)", Qt::ElideRight,
                                          width() - 8));
    const int n = rows_ ? static_cast<int>(rows_->size()) : 0;
    if (n == 0) {
      p.setFont(tokenFont(false));
      p.setPen(QColor(90, 90, 90));
      p.drawText(rect().adjusted(8, titleHeight(), -8, 0), Qt::AlignCenter | Qt::TextWordWrap, empty_);
      return;
    }
    for (int i = 0; i < n; ++i) {
      const QRect r = rowRect(i);
      if (r.top() >= height()) break;  // rows that do not fit are not drawn (the CSV has them)
      const NeuronView::Context& c = (*rows_)[static_cast<size_t>(i)];
      p.setPen(QColor(225, 225, 225));
      p.drawLine(r.bottomLeft(), r.bottomRight());
      p.setFont(tokenFont(false));
      p.setPen(QColor(60, 60, 60));
      p.drawText(QRect(r.left() + 2, r.top(), valueWidth() - 8, r.height()), Qt::AlignRight | Qt::AlignVCenter,
                 QString::number(static_cast<double>(c.recorded), 'f', 3));
      for (const Placed& t : layoutRow(i)) {
        const bool sampled = t.index == c.sampleIndex;
        p.fillRect(t.rect, activationShade(c.act[static_cast<size_t>(t.index)], top_));
        if (sampled) {
          p.setPen(QPen(QColor(60, 60, 60), 1));
          p.drawRect(t.rect.adjusted(0, 0, -1, -1));
        }
        p.setFont(tokenFont(sampled));
        p.setPen(c.fromModel ? Qt::black : QColor(90, 90, 90));
        p.drawText(t.rect, Qt::AlignCenter, c.pieces[t.index]);
      }
    }
  }
  void mousePressEvent(QMouseEvent* ev) override {
    const int row = rowAt(ev->position().toPoint());
    if (row >= 0 && ev->button() == Qt::LeftButton && onClick) onClick(row);
  }
  bool event(QEvent* ev) override {
    if (ev->type() != QEvent::ToolTip || !rows_) return QWidget::event(ev);
    const QPoint pos = static_cast<QHelpEvent*>(ev)->pos();
    const int row = rowAt(pos);
    if (row < 0) {
      QToolTip::hideText();
      return true;
    }
    const NeuronView::Context& c = (*rows_)[static_cast<size_t>(row)];
    QString tip = QString("document %1, token %2; recorded activation %3")
                      .arg(c.document)
                      .arg(c.position)
                      .arg(static_cast<double>(c.recorded), 0, 'g', 4);
    for (const Placed& t : layoutRow(row))
      if (t.rect.contains(pos))
        tip += QString("\ntoken '%1' (id %2): activation %3%4")
                   .arg(c.pieces[t.index])
                   .arg(c.tokens[static_cast<size_t>(t.index)])
                   .arg(static_cast<double>(c.act[static_cast<size_t>(t.index)]), 0, 'g', 4)
                   .arg(c.fromModel ? "" : " (recorded)");
    QToolTip::showText(static_cast<QHelpEvent*>(ev)->globalPos(), tip + "\nclick: open the document in the Corpus view",
                       this);
    return true;
  }

 private:
  struct Placed {
    int index;
    QRect rect;
  };
  static QFont tokenFont(bool bold) {
    QFont f = figureFont(9);
    f.setBold(bold);
    return f;
  }
  static QFont titleFont() { return QFont(figureFont(10).family(), 10, QFont::Bold); }
  int valueWidth() const { return QFontMetrics(tokenFont(false)).horizontalAdvance("00.000") + 12; }
  int rowAt(const QPoint& pos) const {
    if (!rows_ || pos.y() < titleHeight()) return -1;
    const int row = (pos.y() - titleHeight()) / rowHeight();
    return row < static_cast<int>(rows_->size()) ? row : -1;
  }
  /// The tokens of row `i` that fit the width, placed left to right: tokens
  /// are dropped from the left first (the sampled one and what follows it
  /// matter most), then from the right.
  std::vector<Placed> layoutRow(int i) const {
    const NeuronView::Context& c = (*rows_)[static_cast<size_t>(i)];
    const int n = static_cast<int>(c.pieces.size());
    std::vector<int> w(static_cast<size_t>(n));
    int total = 0;
    for (int k = 0; k < n; ++k) {
      w[static_cast<size_t>(k)] =
          std::max(4, QFontMetrics(tokenFont(k == c.sampleIndex)).horizontalAdvance(c.pieces[k]) + 2);
      total += w[static_cast<size_t>(k)];
    }
    const int avail = width() - valueWidth() - 4;
    int s = 0, e = n;
    while (total > avail && s < c.sampleIndex) total -= w[static_cast<size_t>(s++)];
    while (total > avail && e - 1 > c.sampleIndex) total -= w[static_cast<size_t>(--e)];
    std::vector<Placed> out;
    const QRect r = rowRect(i);
    int x = valueWidth();
    for (int k = s; k < e; ++k) {
      out.push_back({k, QRect(x, r.top() + 2, w[static_cast<size_t>(k)], r.height() - 4)});
      x += w[static_cast<size_t>(k)];
    }
    return out;
  }
  const std::vector<NeuronView::Context>* rows_ = nullptr;
  QString empty_;
  double top_ = 0;
};

// ------------------------------------------------------------ NeuronView

NeuronView::NeuronView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Neuron", PickRecording | PickPartition | PickRouter | PickLayer, parent) {
  // Two pages switched by tabs on the body's left edge, as the Router view's
  // panels: at 1366x768 there is no height to spare for another bar.
  auto* bodyLayout = new QHBoxLayout(body());
  bodyLayout->setContentsMargins(0, 0, 0, 0);
  bodyLayout->setSpacing(0);
  pageTabs_ = new QTabBar(body());
  pageTabs_->setObjectName("neuronPages");
  pageTabs_->setShape(QTabBar::RoundedWest);
  pageTabs_->setDocumentMode(true);
  pageTabs_->setExpanding(false);
  pageTabs_->addTab("Neuron");
  pageTabs_->addTab("Expert");
  pageTabs_->setTabToolTip(0,
                           "The selected neuron: contexts, activation histogram, categories, neighbours, partitions");
  pageTabs_->setTabToolTip(1, "The selected expert: members, usage, category profile, router recall");
  bodyLayout->addWidget(pageTabs_, 0, Qt::AlignTop);
  pages_ = new QStackedWidget(body());
  bodyLayout->addWidget(pages_, 1);
  neuronPage_ = new QWidget(pages_);
  neuronPage_->setObjectName("neuronPage");
  expertPage_ = new QWidget(pages_);
  expertPage_->setObjectName("expertPage");
  pages_->addWidget(neuronPage_);
  pages_->addWidget(expertPage_);
  connect(pageTabs_, &QTabBar::currentChanged, pages_, &QStackedWidget::setCurrentIndex);

  auto* g = new QGridLayout(neuronPage_);
  g->setContentsMargins(6, 4, 6, 4);
  g->setSpacing(4);
  header_ = new QLabel(neuronPage_);
  header_->setObjectName("neuronHeader");
  header_->setWordWrap(true);
  header_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  strip_ = new ContextStrip(neuronPage_);
  strip_->onClick = [this](int row) { openContext(row); };
  contextsNote_ = new QLabel(neuronPage_);
  contextsNote_->setObjectName("neuronContextsCaption");
  contextsNote_->setWordWrap(true);
  contextsNote_->setStyleSheet("QLabel { color: #555; }");
  contextsNote_->setFont(figureFont(8));
  hist_ = titledPlot(neuronPage_, "Activation on the recorded samples", "neuronHistogram");
  addDataCaption(hist_);
  hist_->xAxis->setLabel("activation (active samples)");
  hist_->yAxis->setLabel("samples");
  cats_ = titledPlot(neuronPage_, "Firing frequency by category", "neuronCategories");
  addDataCaption(cats_);
  cats_->xAxis->setLabel("firing frequency (%)");
  tables_ = new QTabWidget(neuronPage_);
  tables_->setObjectName("neuronTables");
  tables_->setDocumentMode(true);
  neighboursTable_ = compactTable(tables_, "neuronNeighbours", {"neuron", "co-active", "Jaccard", "lift", "expert"});
  neighboursTable_->setToolTip(
      "Neurons most often active with this one (Jaccard = c_ij / (c_i + c_j - c_ij), lift = "
      "c_ij T / (c_i c_j)); expert: yes / no = in this neuron's expert of the picked partition, with the neighbour's "
      "expert in brackets; click one to select it");
  partitionsTable_ = compactTable(tables_, "neuronPartitions", {"partition", "method", "E", "expert", "size"});
  partitionsTable_->setToolTip(
      "The neuron's expert in every partition of this site; click one to pick that "
      "partition and show the expert");
  tables_->addTab(neighboursTable_, "Neighbours");  // short: both tabs fit beside the plots at 1366x768
  tables_->addTab(partitionsTable_, "Partitions");
  tables_->setTabToolTip(0, "Co-activating neighbours");
  tables_->setTabToolTip(1, "The neuron's expert in every partition");
  g->addWidget(header_, 0, 0, 1, 2);
  g->addWidget(strip_, 1, 0);
  g->addWidget(contextsNote_, 2, 0);
  g->addWidget(hist_, 3, 0);
  g->addWidget(cats_, 1, 1, 2, 1);
  g->addWidget(tables_, 3, 1);
  g->setColumnStretch(0, 3);
  g->setColumnStretch(1, 2);
  g->setRowStretch(1, 3);
  g->setRowStretch(3, 2);

  auto* x = new QGridLayout(expertPage_);
  x->setContentsMargins(6, 4, 6, 4);
  x->setSpacing(4);
  expertHeader_ = new QLabel(expertPage_);
  expertHeader_->setObjectName("expertHeader");
  expertHeader_->setWordWrap(true);
  expertHeader_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  membersTable_ = compactTable(expertPage_, "expertMembers", {"neuron", "frequency", "mean"});
  membersTable_->setToolTip("The expert's neurons by firing frequency; click one to select it");
  usagePlot_ = titledPlot(expertPage_, "Expert usage on the recorded samples", "expertUsage");
  addDataCaption(usagePlot_);
  usagePlot_->xAxis->setLabel("expert");
  usagePlot_->yAxis->setLabel("share of selections");
  profilePlot_ = titledPlot(expertPage_, "Category profile (members' frequency / overall)", "expertProfile");
  addDataCaption(profilePlot_);
  profilePlot_->xAxis->setLabel("relative frequency (1 = the members' overall)");
  x->addWidget(expertHeader_, 0, 0, 1, 2);
  x->addWidget(membersTable_, 1, 0, 2, 1);
  x->addWidget(usagePlot_, 1, 1);
  x->addWidget(profilePlot_, 2, 1);
  x->setColumnStretch(0, 2);
  x->setColumnStretch(1, 3);
  x->setRowStretch(1, 1);
  x->setRowStretch(2, 1);

  connect(neighboursTable_, &QTableWidget::cellClicked, this, [this](int row, int) {
    QTableWidgetItem* it = neighboursTable_->item(row, 0);
    if (it && it->data(Qt::UserRole).toInt() >= 0) this->ctx()->selectNeuron(layer_, it->data(Qt::UserRole).toInt());
  });
  connect(membersTable_, &QTableWidget::cellClicked, this, [this](int row, int) {
    QTableWidgetItem* it = membersTable_->item(row, 0);
    if (it && it->data(Qt::UserRole).toInt() >= 0) this->ctx()->selectNeuron(layer_, it->data(Qt::UserRole).toInt());
  });
  connect(partitionsTable_, &QTableWidget::cellClicked, this, [this](int row, int) {
    if (row < 0 || row >= static_cast<int>(partRows_.size())) return;
    const PartitionRow pr = partRows_[static_cast<size_t>(row)];  // a copy: the picker change redraws the table
    const int L = layer_;
    this->ctx()->setCurrent("partition", pr.path);
    this->ctx()->selectExpert(L, pr.expert);
    showPage(ExpertPage);
  });
  // The selection moves the page (followSelection) and the shown neuron or
  // expert; hidden, the view redraws when shown.
  connect(ctx, &StudioContext::selectionChanged, this, [this] {
    followSelection();
    if (isVisible())
      refresh();
    else
      setProperty("moefyStale", true);
  });
  lastSel_ = ctx->selection();
  refresh();
}

NeuronView::~NeuronView() = default;

NeuronView::Page NeuronView::page() const { return pageTabs_->currentIndex() == 1 ? ExpertPage : NeuronPage; }

void NeuronView::showPage(Page p) { pageTabs_->setCurrentIndex(p == ExpertPage ? 1 : 0); }

QWidget* NeuronView::figureRoot() { return pages_->currentWidget(); }

QWidget* NeuronView::contextStrip() const { return strip_; }

QRect NeuronView::contextRowRect(int row) const { return strip_->rowRect(row); }

double NeuronView::contextScaleMax() const { return strip_->scaleMax(); }

bool NeuronView::busy() const {
  const TaskRunner* t = ctx()->tasks();
  return t->isRunning(kSamplesTask) || t->isRunning(kContextsTask) || t->isRunning(kRoutingTask);
}

QString NeuronView::figureBaseName() const {
  const QString site = rec_ && layer_ >= 0 && rec_->siteOf(layer_).stack != SiteStack::Single
                           ? QString::fromStdString(rec_->siteOf(layer_).name())
                           : QString("L%1").arg(layer_);
  if (page() == ExpertPage) return QString("expert-%1-e%2").arg(site).arg(expert_);
  return QString("neuron-%1-n%2").arg(site).arg(neuron_);
}

void NeuronView::followSelection() {
  const StudioContext::Selection sel = ctx()->selection();
  const bool newNeuron = sel.neuron >= 0 && (sel.neuron != lastSel_.neuron || sel.layer != lastSel_.layer);
  // An expert picked as such (not the expert a new neuron or another partition brings along).
  const bool newExpert = sel.neuron < 0 && sel.expert >= 0 && sel.partition == lastSel_.partition &&
                         (sel.expert != lastSel_.expert || sel.layer != lastSel_.layer || lastSel_.neuron >= 0);
  if (newNeuron)
    showPage(NeuronPage);
  else if (newExpert)
    showPage(ExpertPage);
  lastSel_ = sel;
}

void NeuronView::refresh() {
  rec_ = ctx()->hasWorkspace() ? ctx()->recording(picked("recording")) : nullptr;
  part_ = ctx()->hasWorkspace() ? ctx()->partition(picked("partition")) : nullptr;
  router_ = ctx()->hasWorkspace() ? ctx()->router(picked("router")) : nullptr;
  if (!ctx()->hasWorkspace()) {
    setLayers({});
    setEmptyState("No workspace open.");
    return;
  }
  if (!rec_) {
    setLayers({});
    setEmptyState(
        "No recording yet.\n\nThe neuron and expert pages show what a recording saw: run Pipeline > Record "
        "activations..., then select a neuron in Sparsity, Co-activation or Expert graph.");
    return;
  }
  setLayers(rec_->layers, rec_->sites);
  const int L = layer();
  if (L < 0 || !rec_->stats.count(L) || rec_->widthOf(L) <= 0) {
    setEmptyState("The recording has no statistics at this site.");
    return;
  }
  const int F = rec_->widthOf(L);
  const Recording::LayerStats& st = rec_->stats.at(L);
  const StudioContext::Selection sel = ctx()->selection();
  int n = sel.layer == L && sel.neuron >= 0 && sel.neuron < F ? sel.neuron : -1;
  defaultNeuron_ = n < 0;
  if (n < 0) n = static_cast<int>(std::max_element(st.count.begin(), st.count.end()) - st.count.begin());
  layer_ = L;
  neuron_ = n;
  const bool partFits = part_ && part_->labels.count(L) && static_cast<int>(part_->labels.at(L).size()) == F;
  expert_ = -1;
  defaultExpert_ = false;
  if (partFits) {
    if (sel.layer == L && sel.expert >= 0 && sel.expert < part_->experts) {
      expert_ = sel.expert;
    } else {
      expert_ = part_->labels.at(L)[static_cast<size_t>(n)];
      defaultExpert_ = true;
    }
  }
  setEmptyState("");
  drawNeuronPage();
  drawExpertPage();
}

// ------------------------------------------------------------ neuron page

void NeuronView::drawNeuronPage() {
  const int L = layer_, n = neuron_, F = rec_->widthOf(L);
  const Recording::LayerStats& st = rec_->stats.at(L);
  const int64_t T = std::max<int64_t>(1, rec_->siteTokensOf(L));
  const double freq = static_cast<double>(st.count[static_cast<size_t>(n)]) / static_cast<double>(T);
  QString status = "";
  if (st.count[static_cast<size_t>(n)] == 0)
    status = ", <b>dead</b> (never active)";
  else if (freq >= 0.99)
    status = ", <b>always on</b>";
  QString expert;
  if (expert_ >= 0 && part_)
    expert = QString("; expert %1 of %2 in %3")
                 .arg(part_->labels.at(L)[static_cast<size_t>(n)])
                 .arg(part_->experts)
                 .arg(part_->name.toHtmlEscaped());
  header_->setText(QString("<b>%1, neuron %2</b>: fires on %3 of %L4 tokens, mean %5, max %6%7%8.%9")
                       .arg(rec_->siteText(L, true))
                       .arg(n)
                       .arg(percent(freq, 2))
                       .arg(T)
                       .arg(st.mean[static_cast<size_t>(n)], 0, 'g', 4)
                       .arg(st.max[static_cast<size_t>(n)], 0, 'g', 4)
                       .arg(status, expert)
                       .arg(defaultNeuron_
                                ? " <span style='color:#a05000'>No neuron selected at this site: showing its most "
                                  "frequent one. Select a neuron in Sparsity, Co-activation or Expert graph.</span>"
                                : QString()));
  // Frequency by category: cheap, from the statistics.
  catFreq_.assign(static_cast<size_t>(rec_->categories.size()), std::numeric_limits<double>::quiet_NaN());
  for (size_t c = 0; c < catFreq_.size() && c < st.categoryTokens.size(); ++c)
    if (st.categoryTokens[c] > 0)
      catFreq_[c] = static_cast<double>(st.categoryCount[c * static_cast<size_t>(F) + static_cast<size_t>(n)]) /
                    static_cast<double>(st.categoryTokens[c]);
  drawCategories();
  fillPartitions();
  const QString key = QString("%1|%2|%3").arg(rec_->dir).arg(L).arg(n);
  if (key != samplesKey_) {
    samplesKey_ = key;
    startSamplesTask();
  } else {
    fillNeighbours();  // the partition may have changed: the same-expert column
  }
}

namespace {
struct SamplesResult {
  std::vector<NeuronView::Context> contexts;
  std::vector<double> edges;
  std::vector<qint64> counts;
  qint64 inactive = 0, samples = 0;
  std::vector<NeuronView::Neighbour> neighbours;
  QString neighboursNote;
};
}  // namespace

void NeuronView::startSamplesTask() {
  contexts_.clear();
  histEdges_.clear();
  histCounts_.clear();
  inactive_ = samples_ = 0;
  neighbours_.clear();
  neighboursNote_ = "Reading the co-activation counts...";
  contextsCaption_ = "Reading the recorded samples...";
  contextsNote_->setText(contextsCaption_);
  strip_->setRows(&contexts_, contextsCaption_);
  drawHistogram();
  fillNeighbours();
  const std::shared_ptr<Recording> rec = rec_;
  const int L = layer_, n = neuron_;
  const QString key = samplesKey_;
  QPointer<NeuronView> self(this);
  ctx()->tasks()->run(
      kSamplesTask, this,
      [self, rec, L, n, key](JobContext& job) -> std::function<void()> {
        job.setStage("neuron samples");
        SamplesResult r;
        const int F = rec->widthOf(L);
        if (rec->hasSamples()) {
          const std::shared_ptr<const std::vector<float>> act = rec->sampleAct(L);  // [S * F]
          const Recording::Samples& smp = rec->samples(L);
          const auto S = static_cast<size_t>(smp.count());
          std::vector<float> v(S);
          float top = 0;
          for (size_t i = 0; i < S; ++i) {
            v[i] = (*act)[i * static_cast<size_t>(F) + static_cast<size_t>(n)];
            if (v[i] <= 0)
              ++r.inactive;
            else
              top = std::max(top, v[i]);
          }
          r.samples = static_cast<qint64>(S);
          if (top > 0) {
            const double width = static_cast<double>(top) / kHistogramBins;
            for (int b = 0; b <= kHistogramBins; ++b) r.edges.push_back(b * width);
            r.counts.assign(kHistogramBins, 0);
            for (float x : v)
              if (x > 0) ++r.counts[static_cast<size_t>(std::min(kHistogramBins - 1, static_cast<int>(x / width)))];
          }
          std::vector<size_t> order;
          for (size_t i = 0; i < S; ++i)
            if (v[i] > 0) order.push_back(i);
          const size_t shown = std::min<size_t>(kContexts, order.size());
          std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(shown), order.end(),
                            [&](size_t a, size_t b) { return v[a] != v[b] ? v[a] > v[b] : a < b; });
          for (size_t k = 0; k < shown; ++k) {
            const size_t i = order[k];
            NeuronView::Context c;
            c.sample = static_cast<int>(i);
            c.document = smp.docId[i];
            c.position = smp.position[i];
            c.category = smp.category[i];
            c.recorded = v[i];
            c.tokenId = smp.tokenId[i];
            c.tokens = {c.tokenId};
            c.act = {v[i]};
            r.contexts.push_back(c);
          }
        }
        job.checkCancel();
        if (rec->hasCoact()) {
          const std::shared_ptr<const std::vector<int32_t>> C = rec->coact(L);  // [F * F]
          const auto at = [&](int i, int j) {
            return static_cast<double>((*C)[static_cast<size_t>(i) * static_cast<size_t>(F) + static_cast<size_t>(j)]);
          };
          const double T = static_cast<double>(std::max<int64_t>(1, rec->siteTokensOf(L)));
          const double ci = at(n, n);
          for (int j = 0; j < F; ++j) {
            const double cij = at(n, j);
            if (j == n || cij <= 0) continue;
            const double cj = at(j, j);
            NeuronView::Neighbour nb;
            nb.neuron = j;
            nb.count = static_cast<qint64>(cij);
            nb.jaccard = cij / std::max(1.0, ci + cj - cij);
            nb.lift = ci > 0 && cj > 0 ? cij * T / (ci * cj) : 0;
            r.neighbours.push_back(nb);
          }
          std::sort(r.neighbours.begin(), r.neighbours.end(), [](const auto& a, const auto& b) {
            if (a.jaccard != b.jaccard) return a.jaccard > b.jaccard;
            if (a.count != b.count) return a.count > b.count;
            return a.neuron < b.neuron;
          });
          if (r.neighbours.size() > static_cast<size_t>(kNeighbours)) r.neighbours.resize(kNeighbours);
          if (r.neighbours.empty()) r.neighboursNote = "No neuron is ever active with this one.";
        } else {
          r.neighboursNote = "The recording has no co-activation counts (coact.safetensors).";
        }
        return [self, r, key] {
          if (!self || self->samplesKey_ != key) return;
          self->contexts_ = r.contexts;
          for (Context& c : self->contexts_) c.pieces = {self->ctx()->tokenText(c.tokenId)};
          self->histEdges_ = r.edges;
          self->histCounts_ = r.counts;
          self->inactive_ = r.inactive;
          self->samples_ = r.samples;
          self->neighbours_ = r.neighbours;
          self->neighboursNote_ = r.neighboursNote;
          self->drawHistogram();
          self->fillNeighbours();
          self->startContextsTask();
        };
      },
      [self, key](const QString& err) {
        if (!self || self->samplesKey_ != key) return;
        self->contextsCaption_ = "Cannot read the samples: " + err;
        self->contextsNote_->setText(self->contextsCaption_);
        self->strip_->setRows(&self->contexts_, self->contextsCaption_);
        self->neighboursNote_ = self->contextsCaption_;
        self->fillNeighbours();
        self->ctx()->report(StudioContext::Error, "Neuron view: " + err);
      });
}

void NeuronView::startContextsTask() {
  const QString key = samplesKey_;
  auto show = [this](const QString& caption) {
    contextsCaption_ = caption;
    contextsNote_->setText(caption);
    strip_->setRows(&contexts_, caption);
  };
  if (contexts_.empty()) {
    show(!rec_->hasSamples() || samples_ == 0
             ? "The recording kept no sampled tokens (samples.safetensors): record again with --samples > 0."
             : "No recorded sample activates this neuron (all its sampled activations are <= 0).");
    return;
  }
  // What the model run needs, known here: a whole-FFN site of a single
  // stack, the recording's corpus as text, its window length, the model.
  const Site site = rec_->siteOf(layer_);
  const nlohmann::json& m = rec_->manifest;
  const nlohmann::json corpus = m.value("corpus", nlohmann::json::object());
  const QString corpusPath = QString::fromStdString(corpus.value("path", std::string()));
  const std::string kind = corpus.value("kind", std::string());
  const int seqLen = m.value("options", nlohmann::json::object()).value("seq_len", 0);
  const std::shared_ptr<const SharedModel> model = ctx()->sharedModel();
  QString why;
  if (site.stack != SiteStack::Single || site.expert >= 0 || site.shared)
    why = QString("%1 is not a whole-FFN site of a single-stack model (the samples are shown as recorded)")
              .arg(QString::fromStdString(site.name()));
  else if (kind == "tokens" || kind.rfind("parallel", 0) == 0)
    why = QString("the recording read %1, not documents of text").arg(kind == "tokens" ? "token ids" : "pairs");
  else if (corpusPath.isEmpty() || !QFileInfo::exists(corpusPath))
    why = QString("the recording's corpus %1 is not there").arg(corpusPath.isEmpty() ? "(none)" : corpusPath);
  else if (seqLen < 1)
    why = "the recording's manifest has no seq_len";
  else if (!model)
    why = "no workspace model";
  if (!why.isEmpty()) {
    show("Recorded tokens only: " + why + ".");
    return;
  }
  show("Running the model on the contexts' windows...");
  struct Request {
    qint64 document, position;
    int32_t tokenId;
  };
  std::vector<Request> requests;
  for (const Context& c : contexts_) requests.push_back({c.document, c.position, c.tokenId});
  const std::shared_ptr<Recording> rec = rec_;
  const int n = neuron_;
  QPointer<NeuronView> self(this);
  ctx()->tasks()->run(
      kContextsTask, this,
      [self, rec, model, requests, corpusPath, seqLen, site, n, key](JobContext& job) -> std::function<void()> {
        job.setStage("neuron contexts");
        model->checkRecording(*rec);  // another model's activations would not be this neuron's
        const std::shared_ptr<const Tokenizer> tokenizer = model->tokenizer();
        const std::unique_ptr<Corpus> corpus = Corpus::open(corpusPath.toStdString());
        std::map<qint64, std::vector<int32_t>> documents;
        std::vector<Context> rows(requests.size());
        int mismatched = 0;
        for (size_t i = 0; i < requests.size(); ++i) {
          job.checkCancel();
          const Request& q = requests[i];
          auto it = documents.find(q.document);
          if (it == documents.end())
            it = documents.emplace(q.document, recordedDocumentTokens(*corpus, *tokenizer, q.document)).first;
          const std::vector<int32_t>& ids = it->second;
          if (q.position < 0 || q.position >= static_cast<qint64>(ids.size()) ||
              ids[static_cast<size_t>(q.position)] != q.tokenId) {
            ++mismatched;  // the corpus or the tokenizer changed since the recording
            continue;
          }
          const SampleWindow w =
              recordedSampleWindow(static_cast<int64_t>(ids.size()), q.position, seqLen, kBefore, kAfter);
          Context& c = rows[i];
          c.act = model->neuronActivations(site, n, ids, w.shownBegin, w.shownEnd, seqLen, &job);
          c.tokens.assign(ids.begin() + w.shownBegin, ids.begin() + w.shownEnd);
          for (int32_t id : c.tokens) c.pieces << tokenPiece(*tokenizer, id);
          c.firstToken = w.shownBegin;
          c.sampleIndex = static_cast<int>(q.position - w.shownBegin);
          c.fromModel = true;
        }
        return [self, rows, mismatched, seqLen, key] {
          if (!self || self->samplesKey_ != key || rows.size() != self->contexts_.size()) return;
          for (size_t i = 0; i < rows.size(); ++i) {
            if (!rows[i].fromModel) continue;
            Context& c = self->contexts_[i];
            c.tokens = rows[i].tokens;
            c.pieces = rows[i].pieces;
            c.act = rows[i].act;
            c.firstToken = rows[i].firstToken;
            c.sampleIndex = rows[i].sampleIndex;
            c.fromModel = true;
          }
          QString caption = QString(
                                "Each token is shaded by this neuron's activation when the model reads the "
                                "recorder's window of the document (%1 tokens), white at 0 to orange at the "
                                "largest here; the sampled token is bold and framed, its recorded activation "
                                "on the left.")
                                .arg(seqLen);
          if (mismatched > 0)
            caption += QString(
                           " %1 of the samples show the recorded token only: their document's token differs "
                           "from the recorded one (the corpus or the tokenizer changed since the recording).")
                           .arg(mismatched);
          self->contextsCaption_ = caption;
          self->contextsNote_->setText(caption);
          self->strip_->setRows(&self->contexts_, caption);
        };
      },
      [self, key](const QString& err) {
        if (!self || self->samplesKey_ != key) return;
        self->contextsCaption_ = "Recorded tokens only: " + err;
        self->contextsNote_->setText(self->contextsCaption_);
        self->strip_->setRows(&self->contexts_, self->contextsCaption_);
      });
}

void NeuronView::openContext(int row) {
  if (row < 0 || row >= static_cast<int>(contexts_.size()) || !rec_) return;
  const Context& c = contexts_[static_cast<size_t>(row)];
  auto* corpusView = window()->findChild<CorpusView*>();
  if (!corpusView) return;
  const nlohmann::json corpus = rec_->manifest.value("corpus", nlohmann::json::object());
  const QString corpusPath = QString::fromStdString(corpus.value("path", std::string()));
  const int seqLen = rec_->manifest.value("options", nlohmann::json::object()).value("seq_len", 0);
  corpusView->showDocumentActivations(corpusPath, c.document, rec_->siteOf(layer_), neuron_, std::max(1, seqLen),
                                      c.position);
  ctx()->requestView("Corpus");
}

void NeuronView::drawHistogram() {
  hist_->clearPlottables();
  hist_->clearItems();
  auto* caption = qobject_cast<QCPTextElement*>(hist_->plotLayout()->element(1, 0));
  if (histCounts_.empty()) {
    if (caption) caption->setText(samples_ > 0 ? "no sampled token activates this neuron" : "");
    hist_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  auto* bars = new QCPBars(hist_->xAxis, hist_->yAxis);
  bars->setName("samples");
  const double width = histEdges_[1] - histEdges_[0];
  bars->setWidth(width);
  bars->setPen(Qt::NoPen);
  bars->setBrush(QColor(0xfd, 0x8d, 0x3c));
  QVector<double> x, y;
  double top = 1;
  for (size_t b = 0; b < histCounts_.size(); ++b) {
    x << (histEdges_[b] + histEdges_[b + 1]) / 2;
    y << static_cast<double>(histCounts_[b]);
    top = std::max(top, y.back());
  }
  bars->setData(x, y, true);
  hist_->xAxis->setRange(0, histEdges_.back());
  hist_->yAxis->setRange(0, top * 1.1);
  if (caption)
    caption->setText(QString("%1 of %2 sampled tokens inactive (<= 0): %3")
                         .arg(inactive_)
                         .arg(samples_)
                         .arg(percent(samples_ > 0 ? static_cast<double>(inactive_) / samples_ : 0)));
  hist_->replot(QCustomPlot::rpQueuedReplot);
}

void NeuronView::drawCategories() {
  cats_->clearPlottables();
  cats_->clearItems();
  auto* caption = qobject_cast<QCPTextElement*>(cats_->plotLayout()->element(1, 0));
  QSharedPointer<QCPAxisTickerText> ticks(new QCPAxisTickerText);
  QVector<double> keys, values;
  double top = 0;
  int row = 0;
  for (size_t c = 0; c < catFreq_.size(); ++c) {
    if (!std::isfinite(catFreq_[c])) continue;
    keys << row;
    values << 100.0 * catFreq_[c];
    top = std::max(top, values.back());
    ticks->addTick(row++, rec_->categories[static_cast<int>(c)]);
  }
  const int64_t T = std::max<int64_t>(1, rec_->siteTokensOf(layer_));
  const double overall = 100.0 * rec_->stats.at(layer_).count[static_cast<size_t>(neuron_)] / static_cast<double>(T);
  if (row == 0) {
    if (caption) caption->setText("the recording has no categories");
    cats_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  auto* bars = new QCPBars(cats_->yAxis, cats_->xAxis);
  bars->setName("frequency");
  bars->setWidth(0.7);
  bars->setPen(Qt::NoPen);
  bars->setBrush(mapColor(ColorMap::Viridis, 0.45));
  bars->setData(keys, values, true);
  auto* line = new QCPItemStraightLine(cats_);
  line->point1->setCoords(overall, 0);
  line->point2->setCoords(overall, 1);
  line->setPen(QPen(QColor(60, 60, 60), 1.5, Qt::DashLine));
  cats_->yAxis->setTicker(ticks);
  cats_->yAxis->setTickLabelFont(figureFont(row > 10 ? 7 : 8));
  cats_->yAxis->setRange(-0.6, row - 0.4);
  cats_->yAxis->setRangeReversed(true);
  cats_->xAxis->setRange(0, std::max(top, overall) * 1.12 + 1e-9);
  if (caption) caption->setText(QString("dashed: overall %1%").arg(overall, 0, 'f', 2));
  cats_->replot(QCustomPlot::rpQueuedReplot);
}

void NeuronView::fillNeighbours() {
  auto* t = neighboursTable_;
  t->setRowCount(0);
  if (neighbours_.empty()) {
    t->setRowCount(1);
    auto* it = new QTableWidgetItem(neighboursNote_);
    it->setData(Qt::UserRole, -1);
    it->setToolTip(neighboursNote_);
    t->setItem(0, 0, it);
    t->setSpan(0, 0, 1, t->columnCount());
    return;
  }
  t->clearSpans();
  const bool partFits = part_ && part_->labels.count(layer_) &&
                        static_cast<int>(part_->labels.at(layer_).size()) == rec_->widthOf(layer_);
  const int mine = partFits ? part_->labels.at(layer_)[static_cast<size_t>(neuron_)] : -1;
  t->setRowCount(static_cast<int>(neighbours_.size()));
  for (size_t r = 0; r < neighbours_.size(); ++r) {
    Neighbour& nb = neighbours_[r];
    nb.expert = partFits ? part_->labels.at(layer_)[static_cast<size_t>(nb.neuron)] : -1;
    const int row = static_cast<int>(r);
    t->setItem(row, 0, numberItem(nb.neuron, QString::number(nb.neuron), nb.neuron));
    t->setItem(row, 1, numberItem(static_cast<double>(nb.count), QString("%L1").arg(nb.count), nb.neuron));
    t->setItem(row, 2, numberItem(nb.jaccard, QString::number(nb.jaccard, 'f', 3), nb.neuron));
    t->setItem(row, 3, numberItem(nb.lift, QString::number(nb.lift, 'f', 2), nb.neuron));
    t->setItem(row, 4,
               new QTableWidgetItem(!partFits           ? QString("-")
                                    : nb.expert == mine ? QString("yes (%1)").arg(nb.expert)
                                                        : QString("no (%1)").arg(nb.expert)));
  }
}

void NeuronView::fillPartitions() {
  partRows_.clear();
  const int L = layer_, F = rec_->widthOf(L);
  for (const QString& path : ctx()->paths("partition")) {
    const std::shared_ptr<Partition> p = ctx()->partition(path);
    if (!p || !p->labels.count(L) || static_cast<int>(p->labels.at(L).size()) != F) continue;
    PartitionRow r;
    r.path = path;
    r.name = p->name;
    r.method = p->method;
    r.experts = p->experts;
    r.expert = p->labels.at(L)[static_cast<size_t>(neuron_)];
    const std::vector<int> sizes = p->sizes(L);
    r.expertSize =
        r.expert >= 0 && r.expert < static_cast<int>(sizes.size()) ? sizes[static_cast<size_t>(r.expert)] : 0;
    partRows_.push_back(r);
  }
  auto* t = partitionsTable_;
  t->setRowCount(static_cast<int>(partRows_.size()));
  const QString current = part_ ? part_->dir : QString();
  for (size_t i = 0; i < partRows_.size(); ++i) {
    const PartitionRow& r = partRows_[i];
    const int row = static_cast<int>(i);
    auto* name = new QTableWidgetItem(r.name);
    name->setToolTip(r.path);
    if (QFileInfo(r.path).canonicalFilePath() == QFileInfo(current).canonicalFilePath()) {
      QFont f = name->font();
      f.setBold(true);
      name->setFont(f);
    }
    t->setItem(row, 0, name);
    t->setItem(row, 1, new QTableWidgetItem(r.method));
    t->setItem(row, 2, numberItem(r.experts, QString::number(r.experts)));
    t->setItem(row, 3, numberItem(r.expert, QString::number(r.expert)));
    t->setItem(row, 4, numberItem(r.expertSize, QString::number(r.expertSize)));
  }
}

// ------------------------------------------------------------ expert page

void NeuronView::drawExpertPage() {
  members_.clear();
  profile_.clear();
  membersTable_->setRowCount(0);
  profilePlot_->clearPlottables();
  profilePlot_->clearItems();
  const int L = layer_, F = rec_->widthOf(L);
  const bool partFits = part_ && part_->labels.count(L) && static_cast<int>(part_->labels.at(L).size()) == F;
  if (!partFits) {
    usage_.clear();
    routingKey_.clear();
    usagePlot_->clearPlottables();
    usagePlot_->clearItems();
    usagePlot_->replot(QCustomPlot::rpQueuedReplot);
    profilePlot_->replot(QCustomPlot::rpQueuedReplot);
    expertHeader_->setText(
        !part_ ? "No partition picked: split the recording into experts (Pipeline > Split into experts...) and pick "
                 "the partition in the toolbar; then select an expert in Expert graph or Router."
               : QString("Partition %1 does not split %2 at its width %3: pick another partition.")
                     .arg(part_->name, rec_->siteText(L))
                     .arg(F));
    return;
  }
  const Recording::LayerStats& st = rec_->stats.at(L);
  const std::vector<int32_t>& labels = part_->labels.at(L);
  for (int j = 0; j < F; ++j)
    if (labels[static_cast<size_t>(j)] == expert_) members_.push_back(j);
  std::sort(members_.begin(), members_.end(), [&](int a, int b) {
    const int64_t ca = st.count[static_cast<size_t>(a)], cb = st.count[static_cast<size_t>(b)];
    return ca != cb ? ca > cb : a < b;
  });
  const double T = static_cast<double>(std::max<int64_t>(1, rec_->siteTokensOf(L)));
  membersTable_->setRowCount(static_cast<int>(members_.size()));
  for (size_t r = 0; r < members_.size(); ++r) {
    const int j = members_[r];
    const double f = static_cast<double>(st.count[static_cast<size_t>(j)]) / T;
    const int row = static_cast<int>(r);
    auto* id = numberItem(j, QString::number(j), j);
    if (j == neuron_ && !defaultNeuron_) {
      QFont font = id->font();
      font.setBold(true);
      id->setFont(font);
    }
    membersTable_->setItem(row, 0, id);
    membersTable_->setItem(row, 1, numberItem(f, percent(f, 2), j));
    membersTable_->setItem(
        row, 2,
        numberItem(st.mean[static_cast<size_t>(j)], QString::number(st.mean[static_cast<size_t>(j)], 'g', 4), j));
  }
  // Category profile: the members' mean frequency in each category over their mean overall frequency.
  double overall = 0;
  for (int j : members_) overall += static_cast<double>(st.count[static_cast<size_t>(j)]) / T;
  overall /= std::max<size_t>(1, members_.size());
  profile_.assign(static_cast<size_t>(rec_->categories.size()), std::numeric_limits<double>::quiet_NaN());
  QSharedPointer<QCPAxisTickerText> ticks(new QCPAxisTickerText);
  QVector<double> keys, values;
  double top = 1;
  int row = 0;
  for (size_t c = 0; c < profile_.size() && c < st.categoryTokens.size(); ++c) {
    if (st.categoryTokens[c] <= 0 || members_.empty() || overall <= 0) continue;
    double mean = 0;
    for (int j : members_)
      mean += static_cast<double>(st.categoryCount[c * static_cast<size_t>(F) + static_cast<size_t>(j)]) /
              static_cast<double>(st.categoryTokens[c]);
    mean /= static_cast<double>(members_.size());
    profile_[c] = mean / overall;
    keys << row;
    values << profile_[c];
    top = std::max(top, profile_[c]);
    ticks->addTick(row++, rec_->categories[static_cast<int>(c)]);
  }
  auto* caption = qobject_cast<QCPTextElement*>(profilePlot_->plotLayout()->element(1, 0));
  if (row > 0) {
    auto* bars = new QCPBars(profilePlot_->yAxis, profilePlot_->xAxis);
    bars->setName("relative frequency");
    bars->setWidth(0.7);
    bars->setPen(Qt::NoPen);
    bars->setBrush(mapColor(ColorMap::Viridis, 0.6));
    bars->setData(keys, values, true);
    auto* line = new QCPItemStraightLine(profilePlot_);
    line->point1->setCoords(1, 0);
    line->point2->setCoords(1, 1);
    line->setPen(QPen(QColor(60, 60, 60), 1.5, Qt::DashLine));
    profilePlot_->yAxis->setTicker(ticks);
    profilePlot_->yAxis->setTickLabelFont(figureFont(row > 10 ? 7 : 8));
    profilePlot_->yAxis->setRange(-0.6, row - 0.4);
    profilePlot_->yAxis->setRangeReversed(true);
    profilePlot_->xAxis->setRange(0, top * 1.12);
    if (caption) caption->setText(QString("dashed: 1 = the members' overall frequency %1").arg(percent(overall, 2)));
  } else if (caption) {
    caption->setText(members_.empty() ? "the expert has no members" : "no category with active members");
  }
  profilePlot_->replot(QCustomPlot::rpQueuedReplot);

  // Usage and recall: routing the samples, as the Router view does, off the GUI thread.
  std::shared_ptr<Router> router = router_;
  routerNote_.clear();
  if (router && router->kind != "oracle" && !router->partitionPath.isEmpty() &&
      QFileInfo(part_->dir).canonicalFilePath() != QFileInfo(router->partitionPath).canonicalFilePath()) {
    routerNote_ = QString("router %1 was built on another partition; ").arg(router->name);
    router.reset();
  } else if (router && !router->hasLayer(L)) {
    routerNote_ = QString("router %1 has no entry for %2; ").arg(router->name, rec_->siteText(L));
    router.reset();
  }
  const int E = part_->experts;
  const int k = std::clamp(router ? router->topKFor(L) : std::max(1, E / 4), 1, std::max(1, E));
  const QString key =
      QString("%1|%2|%3|%4|%5").arg(rec_->dir, part_->dir, router ? router->dir : QString()).arg(L).arg(k);
  if (key == routingKey_) {
    drawUsage();
    return;
  }
  routingKey_ = key;
  routingError_.clear();
  usage_.clear();
  routedTop_.clear();
  oracleTop_.clear();
  usageK_ = k;
  usageSamples_ = 0;
  recall_ = std::numeric_limits<double>::quiet_NaN();
  drawUsage();
  if (!rec_->hasSamples()) {
    routingError_ = "the recording kept no sampled tokens";
    drawUsage();
    return;
  }
  const std::shared_ptr<Recording> rec = rec_;
  const std::shared_ptr<Partition> part = part_;
  const bool routed = router != nullptr;
  QPointer<NeuronView> self(this);
  ctx()->tasks()->run(
      kRoutingTask, this,
      [self, rec, part, router, L, k, key, routed](JobContext& job) -> std::function<void()> {
        job.setStage("route samples");
        RouterChoices c = routeRecordedSamples(*rec, router.get(), *part, L, k);
        return [self, c, key, routed] {
          if (!self || self->routingKey_ != key) return;
          self->usageSamples_ = c.samples;
          self->usageK_ = c.k;
          self->routedTop_ = routed ? c.top : std::vector<int>();
          self->oracleTop_ = c.oracleTop;
          std::vector<double> share(static_cast<size_t>(c.experts), 0.0);
          for (int e : c.top)
            if (e >= 0 && e < c.experts) share[static_cast<size_t>(e)] += 1;
          for (double& s : share) s /= std::max(1.0, static_cast<double>(c.samples) * c.k);
          self->usage_ = share;
          self->drawUsage();
        };
      },
      [self, key](const QString& err) {
        if (!self || self->routingKey_ != key) return;
        self->routingError_ = err;
        self->drawUsage();
      });
}

void NeuronView::drawUsage() {
  usagePlot_->clearPlottables();
  usagePlot_->clearItems();
  auto* caption = qobject_cast<QCPTextElement*>(usagePlot_->plotLayout()->element(1, 0));
  const int E = part_ ? part_->experts : 0;
  // Recall of the shown expert: of the samples whose oracle top-k holds it,
  // the share whose router top-k holds it too.
  recall_ = std::numeric_limits<double>::quiet_NaN();
  int oracleHits = 0;
  if (!routedTop_.empty() && routedTop_.size() == oracleTop_.size() && usageK_ > 0) {
    int both = 0;
    const size_t k = static_cast<size_t>(usageK_);
    for (size_t s = 0; s * k < oracleTop_.size(); ++s) {
      const auto o0 = oracleTop_.begin() + static_cast<std::ptrdiff_t>(s * k);
      const auto r0 = routedTop_.begin() + static_cast<std::ptrdiff_t>(s * k);
      if (std::find(o0, o0 + static_cast<std::ptrdiff_t>(k), expert_) == o0 + static_cast<std::ptrdiff_t>(k)) continue;
      ++oracleHits;
      if (std::find(r0, r0 + static_cast<std::ptrdiff_t>(k), expert_) != r0 + static_cast<std::ptrdiff_t>(k)) ++both;
    }
    if (oracleHits > 0) recall_ = static_cast<double>(both) / oracleHits;
  }
  expertHeader_->setText(expertCaption().toHtmlEscaped().replace("\n", "<br>"));
  if (usage_.empty() || E <= 0) {
    if (caption)
      caption->setText(routingError_.isEmpty() ? "routing the sampled tokens..." : "cannot route: " + routingError_);
    usagePlot_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  auto* bars = new QCPBars(usagePlot_->xAxis, usagePlot_->yAxis);
  bars->setName("usage");
  bars->setWidth(0.8);
  bars->setPen(Qt::NoPen);
  bars->setBrush(mapColor(ColorMap::Viridis, 0.35));
  auto* mine = new QCPBars(usagePlot_->xAxis, usagePlot_->yAxis);
  mine->setName("this expert");
  mine->setWidth(0.8);
  mine->setPen(QPen(Qt::black, 1));
  mine->setBrush(QColor(0xfd, 0x8d, 0x3c));
  QVector<double> x, y;
  double top = 1.0 / E;
  for (int e = 0; e < static_cast<int>(usage_.size()); ++e) {
    top = std::max(top, usage_[static_cast<size_t>(e)]);
    if (e == expert_) {
      mine->addData(e, usage_[static_cast<size_t>(e)]);
      continue;
    }
    x << e;
    y << usage_[static_cast<size_t>(e)];
  }
  bars->setData(x, y, true);
  auto* uniform = new QCPItemStraightLine(usagePlot_);
  uniform->point1->setCoords(0, 1.0 / E);
  uniform->point2->setCoords(1, 1.0 / E);
  uniform->setPen(QPen(QColor(60, 60, 60), 1.5, Qt::DashLine));
  usagePlot_->xAxis->setRange(-0.6, E - 0.4);
  usagePlot_->yAxis->setRange(0, top * 1.15);
  const double mineShare =
      expert_ >= 0 && expert_ < static_cast<int>(usage_.size()) ? usage_[static_cast<size_t>(expert_)] : 0;
  if (caption)
    caption->setText(QString("%1top-%2 on %3 sampled tokens; expert %4 (orange) %5 of the selections, dashed: 1/E = %6")
                         .arg(routedTop_.empty() ? QString("oracle ") : QString())
                         .arg(usageK_)
                         .arg(usageSamples_)
                         .arg(expert_)
                         .arg(percent(mineShare, 2))
                         .arg(percent(1.0 / E, 2)));
  usagePlot_->replot(QCustomPlot::rpQueuedReplot);
}

QString NeuronView::expertCaption() const {
  if (!part_ || expert_ < 0 || !rec_) return {};
  const int E = part_->experts;
  QString s = QString("%1, expert %2 of %3 in %4 (%5): %6 neurons")
                  .arg(rec_->siteText(layer_, true))
                  .arg(expert_)
                  .arg(E)
                  .arg(part_->name, part_->method)
                  .arg(members_.size());
  if (defaultExpert_)
    s += QString(" (the expert of neuron %1; select an expert in Expert graph or Router)").arg(neuron_);
  s += ".\n";
  const double mineShare = expert_ < static_cast<int>(usage_.size()) ? usage_[static_cast<size_t>(expert_)]
                                                                     : std::numeric_limits<double>::quiet_NaN();
  if (!routingError_.isEmpty()) {
    s += "Usage unknown: " + routingError_ + ".";
    return s;
  }
  if (std::isfinite(mineShare))
    s += QString(
             "Usage: %1 of the top-%2 selections on %3 sampled tokens (uniform 1/E = %4), chosen for %5 of "
             "them. ")
             .arg(percent(mineShare, 2))
             .arg(usageK_)
             .arg(usageSamples_)
             .arg(percent(1.0 / E, 2))
             .arg(percent(mineShare * usageK_, 1));
  if (routedTop_.empty()) {
    s += routerNote_.isEmpty() && !router_
             ? "No router picked: the oracle's choices (top-k of the expert mass); "
               "pick a router for its recall."
             : QString("Oracle choices: %1pick a router built on %2 for its recall.").arg(routerNote_, part_->name);
    return s;
  }
  s += QString("Router %1 recall of this expert: %2")
           .arg(router_->name)
           .arg(std::isfinite(recall_) ? percent(recall_, 1) + " of the samples whose oracle top-k holds it"
                                       : QString("- (the oracle never chooses it)"));
  if (const Router::SiteReport* rep = router_->reportFor(layer_); rep && std::isfinite(rep->massRecall))
    s += QString("; router.json mass recall at this site %1").arg(rep->massRecall, 0, 'f', 3);
  return s + ".";
}

// ------------------------------------------------------------ CSV

QString NeuronView::csvData() const {
  QString out;
  if (!rec_ || layer_ < 0) return "neuron view\n";
  const QString site = QString::fromStdString(rec_->siteOf(layer_).name());
  if (page() == ExpertPage) {
    out += "site,partition,expert,members,usage_share,k,samples,router,recall\n";
    const double mine =
        expert_ >= 0 && expert_ < static_cast<int>(usage_.size()) ? usage_[static_cast<size_t>(expert_)] : NAN;
    out += QString("%1,%2,%3,%4,%5,%6,%7,%8,%9\n")
               .arg(site, csvText(part_ ? part_->name : QString()))
               .arg(expert_)
               .arg(members_.size())
               .arg(mine)
               .arg(usageK_)
               .arg(usageSamples_)
               .arg(csvText(router_ && !routedTop_.empty() ? router_->name : QString("oracle")))
               .arg(recall_);
    out += "\nneuron,frequency,mean\n";
    for (int r = 0; r < membersTable_->rowCount(); ++r)
      out += QString("%1,%2,%3\n")
                 .arg(membersTable_->item(r, 0)->text())
                 .arg(membersTable_->item(r, 1)->data(Qt::UserRole + 1).toDouble())
                 .arg(membersTable_->item(r, 2)->data(Qt::UserRole + 1).toDouble());
    out += "\nexpert,usage_share\n";
    for (size_t e = 0; e < usage_.size(); ++e) out += QString("%1,%2\n").arg(e).arg(usage_[e]);
    out += "\ncategory,relative_frequency\n";
    for (size_t c = 0; c < profile_.size(); ++c)
      if (std::isfinite(profile_[c]))
        out += QString("%1,%2\n").arg(csvText(rec_->categories[static_cast<int>(c)])).arg(profile_[c]);
    return out;
  }
  const Recording::LayerStats& st = rec_->stats.at(layer_);
  out += "site,neuron,count,tokens,mean,max\n";
  out += QString("%1,%2,%3,%4,%5,%6\n")
             .arg(site)
             .arg(neuron_)
             .arg(st.count[static_cast<size_t>(neuron_)])
             .arg(rec_->siteTokensOf(layer_))
             .arg(st.mean[static_cast<size_t>(neuron_)])
             .arg(st.max[static_cast<size_t>(neuron_)]);
  out += "\ncontext,document,position,category,recorded_activation,token_offset,token_id,piece,activation,sampled\n";
  for (size_t r = 0; r < contexts_.size(); ++r) {
    const Context& c = contexts_[r];
    for (size_t i = 0; i < c.tokens.size(); ++i)
      out += QString("%1,%2,%3,%4,%5,%6,%7,%8,%9,%10\n")
                 .arg(r)
                 .arg(c.document)
                 .arg(c.position)
                 .arg(c.category)
                 .arg(static_cast<double>(c.recorded))
                 .arg(c.firstToken >= 0 ? c.firstToken + static_cast<qint64>(i) : c.position)
                 .arg(c.tokens[i])
                 .arg(csvText(i < static_cast<size_t>(c.pieces.size()) ? c.pieces[static_cast<int>(i)] : QString()))
                 .arg(static_cast<double>(c.act[i]))
                 .arg(static_cast<int>(i) == c.sampleIndex ? 1 : 0);
  }
  out += "\nbin_low,bin_high,samples\n";
  for (size_t b = 0; b < histCounts_.size(); ++b)
    out += QString("%1,%2,%3\n").arg(histEdges_[b]).arg(histEdges_[b + 1]).arg(histCounts_[b]);
  out += "\ncategory,tokens,active,frequency\n";
  for (size_t c = 0; c < catFreq_.size(); ++c)
    if (std::isfinite(catFreq_[c]))
      out += QString("%1,%2,%3,%4\n")
                 .arg(csvText(rec_->categories[static_cast<int>(c)]))
                 .arg(st.categoryTokens[c])
                 .arg(st.categoryCount[c * static_cast<size_t>(rec_->widthOf(layer_)) + static_cast<size_t>(neuron_)])
                 .arg(catFreq_[c]);
  out += "\nneighbour,count,jaccard,lift,expert\n";
  for (const Neighbour& nb : neighbours_)
    out += QString("%1,%2,%3,%4,%5\n").arg(nb.neuron).arg(nb.count).arg(nb.jaccard).arg(nb.lift).arg(nb.expert);
  out += "\npartition,method,experts,expert,expert_size\n";
  for (const PartitionRow& r : partRows_)
    out += QString("%1,%2,%3,%4,%5\n")
               .arg(csvText(r.name), csvText(r.method))
               .arg(r.experts)
               .arg(r.expert)
               .arg(r.expertSize);
  return out;
}

}  // namespace moefy::views
