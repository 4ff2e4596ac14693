#include <QFileInfo>
#include <QMouseEvent>
#include <QPainter>
#include <QPointer>
#include <QThread>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <atomic>
#include <functional>
#include <map>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/report/graph_layout.h"
#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

/// A node-link drawing. Positions come from report::layoutGraph (Graphviz sfdp) run on a worker thread.
class GraphCanvas : public QWidget {
 public:
  struct Node {
    int expert = -1;   ///< expert id (for neuron nodes: its expert)
    int neuron = -1;   ///< >= 0 for neuron nodes
    double size = 1;   ///< neuron count (experts) or 1
    double usage = 0;  ///< colour value in [0,1]
    double x = 0, y = 0;
  };
  struct Edge {
    int a, b;
    double w;  ///< in (0, 1]
  };
  explicit GraphCanvas(QWidget* parent) : QWidget(parent) {
    setProperty("vectorFigure", true);
    setMinimumSize(320, 260);
    setMouseTracking(true);
  }
  std::vector<Node> nodes;
  std::vector<Edge> edges;
  QString title;
  double usageMax = 1;
  int selectedExpert = -1, selectedNeuron = -1;
  std::function<void(int node, bool dbl)> onClick;

  int nodeAt(QPointF p) const {
    for (int i = static_cast<int>(nodes.size()) - 1; i >= 0; --i)
      if (QLineF(p, toScreen(nodes[i])).length() <= radius(nodes[i]) + 2) return i;
    return -1;
  }

 protected:
  // Node centres stay inside this rectangle: margins leave room for the largest
  // node (radius 30), the title, the colour bar and the caption.
  QRectF area() const { return QRectF(70, 80, std::max(50, width() - 210), std::max(50, height() - 150)); }
  QPointF toScreen(const Node& n) const {
    QRectF a = area();
    return QPointF(a.left() + (n.x + 1) / 2 * a.width(), a.top() + (n.y + 1) / 2 * a.height());
  }
  double radius(const Node& n) const {
    if (n.neuron >= 0) return 4;
    double maxSize = 1;
    for (const auto& m : nodes) maxSize = std::max(maxSize, m.size);
    return 8 + 22 * std::sqrt(n.size / maxSize);
  }
  void paintEvent(QPaintEvent*) override {
    QPainter p(this);
    p.setRenderHint(QPainter::Antialiasing);
    p.fillRect(rect(), Qt::white);
    p.setFont(QFont(figureFont(11).family(), 11, QFont::Bold));
    p.setPen(Qt::black);
    p.drawText(QRect(0, 8, width(), 24), Qt::AlignHCenter, title);
    for (const auto& e : edges) {
      QColor c(90, 90, 90, static_cast<int>(40 + 180 * e.w));
      p.setPen(QPen(c, 0.5 + 4.5 * e.w));
      p.drawLine(toScreen(nodes[e.a]), toScreen(nodes[e.b]));
    }
    p.setFont(figureFont(8));
    for (const auto& n : nodes) {
      double r = radius(n);
      QPointF c = toScreen(n);
      bool sel = (n.neuron < 0 && n.expert == selectedExpert) || (n.neuron >= 0 && n.neuron == selectedNeuron);
      p.setPen(QPen(sel ? QColor(230, 60, 30) : QColor(40, 40, 40), sel ? 3 : 0.8));
      p.setBrush(mapColor(ColorMap::Viridis, usageMax > 0 ? n.usage / usageMax : 0));
      p.drawEllipse(c, r, r);
      if (n.neuron < 0) {
        p.setPen(n.usage / std::max(usageMax, 1e-12) > 0.6 ? Qt::black : Qt::white);
        p.drawText(QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r), Qt::AlignCenter, QString::number(n.expert));
      }
    }
    // Colour bar legend.
    QRectF bar(width() - 90, 60, 14, std::max(60.0, height() - 150.0));
    for (int i = 0; i < 64; ++i) {
      p.setPen(Qt::NoPen);
      p.setBrush(mapColor(ColorMap::Viridis, 1 - i / 63.0));
      p.drawRect(QRectF(bar.left(), bar.top() + bar.height() * i / 64, bar.width(), bar.height() / 64 + 0.5));
    }
    p.setPen(Qt::black);
    p.setBrush(Qt::NoBrush);
    p.drawRect(bar);
    p.setFont(figureFont(8));
    p.drawText(QPointF(bar.right() + 4, bar.top() + 8), QString::number(usageMax, 'f', 3));
    p.drawText(QPointF(bar.right() + 4, bar.bottom()), "0");
    p.save();
    p.translate(bar.right() + 30, bar.center().y());
    p.rotate(90);
    p.setFont(figureFont(9));
    p.drawText(QRectF(-100, -10, 200, 20), Qt::AlignCenter, "usage (mean firing freq.)");
    p.restore();
    p.setFont(figureFont(8));
    p.setPen(QColor(80, 80, 80));
    p.drawText(QRect(10, height() - 28, width() - 20, 20), Qt::AlignLeft,
               "Node area: neurons per expert. Edge width: inter-expert co-activation. "
               "Click: select, double-click: expand an expert into its neurons.");
  }
  void mousePressEvent(QMouseEvent* ev) override {
    int i = nodeAt(ev->position());
    if (i >= 0 && onClick) onClick(i, false);
  }
  void mouseDoubleClickEvent(QMouseEvent* ev) override {
    int i = nodeAt(ev->position());
    if (i >= 0 && onClick) onClick(i, true);
  }
};

struct LayoutJob {
  std::atomic<bool> stop{false};
  JobContext job;  ///< cancelled when a newer layout replaces this one
  QThread* thread = nullptr;
};
static std::map<const ExpertGraphView*, std::shared_ptr<LayoutJob>> g_layouts;

ExpertGraphView::ExpertGraphView(StudioContext* ctx, QWidget* parent)
    : FigureView(ctx, "Expert graph", PickRecording | PickPartition | PickLayer, parent) {
  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  canvas_ = new GraphCanvas(body());
  lay->addWidget(canvas_, 1);
  note_ = new QLabel(body());
  lay->addWidget(note_);
  canvas_->onClick = [this](int i, bool dbl) {
    const auto& n = canvas_->nodes[i];
    if (n.neuron >= 0) {
      this->ctx()->selectNeuron(layer(), n.neuron);
    } else if (dbl) {
      toggleExpert(n.expert);
    } else {
      this->ctx()->selectExpert(layer(), n.expert);
    }
  };
  connect(ctx, &StudioContext::expertSelected, this, [this](int L, int e) {
    canvas_->selectedExpert = L == layer() ? e : -1;
    canvas_->update();
  });
  connect(ctx, &StudioContext::neuronSelected, this, [this](int L, int n) {
    canvas_->selectedNeuron = L == layer() ? n : -1;
    canvas_->update();
  });
  refresh();
}

int ExpertGraphView::ringedExpert() const { return canvas_->selectedExpert; }

int ExpertGraphView::ringedNeuron() const { return canvas_->selectedNeuron; }

ExpertGraphView::~ExpertGraphView() {
  auto it = g_layouts.find(this);
  if (it != g_layouts.end()) {
    it->second->stop = true;
    if (it->second->thread) it->second->thread->wait();
    g_layouts.erase(it);
  }
}

bool ExpertGraphView::layoutRunning() const {
  auto it = g_layouts.find(this);
  return it != g_layouts.end() && it->second->thread && it->second->thread->isRunning();
}

void ExpertGraphView::toggleExpert(int e) {
  expanded_ = expanded_ == e ? -1 : e;
  refresh();
}

void ExpertGraphView::refresh() {
  rec_ = ctx()->hasWorkspace() ? ctx()->recording(picked("recording")) : nullptr;
  part_ = ctx()->hasWorkspace() ? ctx()->partition(picked("partition")) : nullptr;
  if (!rec_ || !part_) {
    setLayers({});
    setEmptyState(!ctx()->hasWorkspace() ? "No workspace open."
                  : !rec_ ? "No recording yet.\n\nThe expert graph needs a recording and a partition "
                            "(Pipeline > Record activations..., then Split into experts...)."
                          : "No partition yet.\n\nSplit the recording into experts with Pipeline > Split into experts...");
    return;
  }
  std::vector<int> layers;
  std::vector<Site> sites;
  for (int L : rec_->layers)
    if (part_->labels.count(L)) layers.push_back(L), sites.push_back(rec_->siteOf(L));
  setLayers(layers, sites);
  const int L = layer();
  if (L < 0 || part_->dFF != rec_->widthOf(L) || !rec_->hasCoact()) {
    setEmptyState(
        QString("Partition %1 does not fit the recording (d_ff %2 vs %3), or the recording has no co-activation.")
            .arg(part_->name)
            .arg(part_->dFF)
            .arg(L < 0 ? rec_->dFF : rec_->widthOf(L)));
    return;
  }
  std::shared_ptr<const std::vector<int32_t>> C;
  try {
    C = rec_->coact(L);
  } catch (const std::exception& e) {
    ctx()->report(StudioContext::Error, e.what());
    setEmptyState(e.what());
    return;
  }
  setEmptyState("");
  const int F = rec_->widthOf(L), E = part_->experts;
  const auto& lab = part_->labels.at(L);
  const auto& st = rec_->stats.at(L);
  std::vector<int> sizes = part_->sizes(L);
  std::vector<double> usage(E, 0.0);
  // Routed experts only: label E marks a shared expert's neurons (split --shared).
  for (int i = 0; i < F; ++i)
    if (lab[i] < E) usage[lab[i]] += st.count[i] / double(rec_->tokens);
  for (int e = 0; e < E; ++e) usage[e] = sizes[e] ? usage[e] / sizes[e] : 0;
  // Inter-expert co-activation: mean pairwise count between their neurons.
  std::vector<double> W(size_t(E) * E, 0.0);
  for (int i = 0; i < F; ++i) {
    if (lab[i] >= E) continue;
    const int32_t* row = C->data() + size_t(i) * F;
    double* wr = W.data() + size_t(lab[i]) * E;
    for (int j = 0; j < F; ++j)
      if (i != j && lab[j] < E) wr[lab[j]] += row[j];
  }
  std::vector<GraphCanvas::Node> nodes;
  std::vector<GraphCanvas::Edge> edges;
  for (int e = 0; e < E; ++e) nodes.push_back({e, -1, double(sizes[e]), usage[e], 0, 0});
  // Keep each expert's 3 strongest links (normalised by block size) for a readable graph.
  std::vector<double> norm(size_t(E) * E, 0.0);
  double wmax = 0;
  for (int a = 0; a < E; ++a)
    for (int b = 0; b < E; ++b)
      if (a != b && sizes[a] && sizes[b]) {
        norm[size_t(a) * E + b] = W[size_t(a) * E + b] / (double(sizes[a]) * sizes[b]);
        wmax = std::max(wmax, norm[size_t(a) * E + b]);
      }
  std::set<std::pair<int, int>> keep;
  for (int a = 0; a < E; ++a) {
    std::vector<int> idx;
    for (int b = 0; b < E; ++b)
      if (b != a) idx.push_back(b);
    std::sort(idx.begin(), idx.end(), [&](int x, int y) { return norm[size_t(a) * E + x] > norm[size_t(a) * E + y]; });
    for (int j = 0; j < std::min<int>(3, idx.size()); ++j)
      if (norm[size_t(a) * E + idx[j]] > 0) keep.insert({std::min(a, idx[j]), std::max(a, idx[j])});
  }
  for (auto [a, b] : keep) edges.push_back({a, b, wmax > 0 ? norm[size_t(a) * E + b] / wmax : 0});
  // The colour scale is the experts' usage: expanding an expert into its
  // neurons (coloured on the same scale) does not recolour the others.
  const double umax = *std::max_element(usage.begin(), usage.end());
  std::vector<int> members;
  std::vector<report::LayoutEdge> memberEdges;  // among members, local indices
  if (expanded_ >= 0 && expanded_ < E) {
    for (int i = 0; i < F; ++i)
      if (lab[i] == expanded_) members.push_back(i);
    double cmax = 1;
    for (int a : members)
      for (int b : members)
        if (a != b) cmax = std::max(cmax, double((*C)[size_t(a) * F + b]));
    const int base = static_cast<int>(nodes.size());
    for (int i : members) {
      nodes.push_back({expanded_, i, 1, st.count[i] / double(rec_->tokens), 0, 0});
      edges.push_back({expanded_, static_cast<int>(nodes.size()) - 1, 0.6});
    }
    for (size_t a = 0; a < members.size(); ++a)
      for (size_t b = a + 1; b < members.size(); ++b) {
        double w = (*C)[size_t(members[a]) * F + members[b]] / cmax;
        if (w > 0.5) {
          edges.push_back({base + int(a), base + int(b), w * 0.5});
          memberEdges.push_back({int(a), int(b)});
        }
      }
  }
  canvas_->usageMax = umax;
  canvas_->title = QString("Experts of %1 (%2, %3 experts)%4")
                       .arg(rec_->siteText(L))
                       .arg(part_->name)
                       .arg(E)
                       .arg(expanded_ >= 0 ? QString(", expert %1 expanded").arg(expanded_) : QString());
  canvas_->selectedExpert = ctx()->selectedLayer() == L ? ctx()->selectedExpert() : -1;
  canvas_->selectedNeuron = ctx()->selectedLayer() == L ? ctx()->selectedNeuron() : -1;

  // Layouts (Graphviz sfdp, seeded) run on a worker thread; the canvas shows
  // the result when it arrives. The experts' layout is kept per recording,
  // partition and layer, so redraws and expanding an expert do not move them:
  // an expanded expert's neurons get their own layout, placed around it.
  const QString key = rec_->dir + "|" + part_->dir + "|" + QString::number(L);
  std::vector<report::LayoutEdge> expertEdges;
  std::vector<double> expertRadius;
  for (const auto& e : edges)
    if (nodes[e.a].neuron < 0 && nodes[e.b].neuron < 0) expertEdges.push_back({e.a, e.b});
  {
    const double maxSize = std::max(1.0, double(*std::max_element(sizes.begin(), sizes.end())));
    // GraphCanvas::radius() in pixels against ~60 px per edge length.
    for (int e = 0; e < E; ++e) expertRadius.push_back((8 + 22 * std::sqrt(sizes[e] / maxSize)) / 60.0);
  }
  std::vector<std::array<double, 2>> knownExperts =
      expertPosKey_ == key && int(expertPos_.size()) == E ? expertPos_ : std::vector<std::array<double, 2>>{};
  auto& slot = g_layouts[this];
  if (slot) {
    slot->stop = true;
    slot->job.cancel();
    if (slot->thread) slot->thread->wait();
  }
  slot = std::make_shared<LayoutJob>();
  auto job = slot;
  canvas_->nodes.clear();
  canvas_->edges.clear();
  canvas_->update();
  note_->setText("Computing the layout...");
  QPointer<ExpertGraphView> self(this);
  const int expanded = expanded_;
  const int memberCount = static_cast<int>(members.size());
  job->thread = QThread::create([self, job, nodes, edges, key, E, expanded, memberCount, expertEdges, expertRadius,
                                 memberEdges, knownExperts]() mutable {
    std::vector<std::array<double, 2>> experts = knownExperts;
    QString error;
    try {
      if (experts.empty()) {
        report::LayoutOptions o;
        o.seed = 1;
        o.radius = expertRadius;
        experts = report::layoutGraph(E, expertEdges, o, job->job);
      }
      for (int e = 0; e < E; ++e)
        nodes[size_t(e)].x = experts[size_t(e)][0], nodes[size_t(e)].y = experts[size_t(e)][1];
      if (expanded >= 0 && memberCount > 0) {
        report::LayoutOptions o;
        o.seed = 1 + static_cast<uint64_t>(expanded);
        auto local = report::layoutGraph(memberCount, memberEdges, o, job->job);
        // A disc around the expert, its size growing with the member count.
        const double r = std::min(0.45, 0.08 + 0.012 * std::sqrt(double(memberCount)));
        for (int i = 0; i < memberCount; ++i) {
          auto& n = nodes[size_t(E + i)];
          n.x = std::clamp(experts[size_t(expanded)][0] + r * local[size_t(i)][0], -1.0, 1.0);
          n.y = std::clamp(experts[size_t(expanded)][1] + r * local[size_t(i)][1], -1.0, 1.0);
        }
      }
    } catch (const CancelledError&) {
      return;
    } catch (const std::exception& e) {
      error = QString::fromUtf8(e.what());
    }
    if (job->stop) return;
    QMetaObject::invokeMethod(
        self,
        [self, job, key, error, experts = std::move(experts), nodes = std::move(nodes),
         edges = std::move(edges)]() mutable {
          if (!self || job->stop) return;
          if (!error.isEmpty()) {
            self->note_->setText("Layout failed: " + error);
            self->ctx()->report(StudioContext::Error, "Expert graph: " + error);
            return;
          }
          self->expertPosKey_ = key;
          self->expertPos_ = std::move(experts);
          self->canvas_->nodes = std::move(nodes);
          self->canvas_->edges = std::move(edges);
          self->canvas_->update();
          self->note_->setText(QString("%1 nodes, %2 edges (Graphviz sfdp layout, seeded: stable across redraws).")
                                   .arg(self->canvas_->nodes.size())
                                   .arg(self->canvas_->edges.size()));
        },
        Qt::QueuedConnection);
  });
  connect(job->thread, &QThread::finished, job->thread, &QObject::deleteLater);
  connect(job->thread, &QThread::destroyed, this, [job] { job->thread = nullptr; });
  job->thread->start();
}

QString ExpertGraphView::csvData() const {
  QString out = "kind,expert_or_node_a,neuron_or_node_b,size_or_weight,usage,x,y\n";
  for (const auto& n : canvas_->nodes)
    out += QString("node,%1,%2,%3,%4,%5,%6\n").arg(n.expert).arg(n.neuron).arg(n.size).arg(n.usage, 0, 'g', 6).arg(n.x, 0, 'f', 4).arg(n.y, 0, 'f', 4);
  for (const auto& e : canvas_->edges) out += QString("edge,%1,%2,%3,,,\n").arg(e.a).arg(e.b).arg(e.w, 0, 'g', 6);
  return out;
}

}  // namespace moefy::views
