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

#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

/// A node-link drawing. Positions come from forceLayout() run on a worker thread.
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
    setMinimumSize(400, 360);
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

namespace {

/// Fruchterman-Reingold in [-1,1]^2 with weighted attraction. Deterministic
/// (seeded); cancellable through `stop`.
void forceLayout(std::vector<GraphCanvas::Node>& nodes, const std::vector<GraphCanvas::Edge>& edges, int iters,
                 const std::atomic<bool>& stop) {
  const int n = static_cast<int>(nodes.size());
  if (n == 0) return;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-1, 1);
  for (auto& nd : nodes)
    if (nd.x == 0 && nd.y == 0) nd.x = u(rng), nd.y = u(rng);
  const double k = std::sqrt(4.0 / n);
  std::vector<double> dx(n), dy(n);
  for (int it = 0; it < iters && !stop.load(); ++it) {
    double temp = 0.1 * (1.0 - double(it) / iters) + 0.002;
    std::fill(dx.begin(), dx.end(), 0.0);
    std::fill(dy.begin(), dy.end(), 0.0);
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) {
        double ddx = nodes[i].x - nodes[j].x, ddy = nodes[i].y - nodes[j].y;
        double d2 = std::max(1e-6, ddx * ddx + ddy * ddy);
        double f = k * k / d2;
        dx[i] += ddx * f, dy[i] += ddy * f;
        dx[j] -= ddx * f, dy[j] -= ddy * f;
      }
    for (const auto& e : edges) {
      double ddx = nodes[e.a].x - nodes[e.b].x, ddy = nodes[e.a].y - nodes[e.b].y;
      double d = std::sqrt(ddx * ddx + ddy * ddy) + 1e-9;
      double f = d * e.w / k;
      dx[e.a] -= ddx * f, dy[e.a] -= ddy * f;
      dx[e.b] += ddx * f, dy[e.b] += ddy * f;
    }
    for (int i = 0; i < n; ++i) {
      dx[i] -= 0.15 * nodes[i].x;  // gravity keeps weakly connected parts on screen
      dy[i] -= 0.15 * nodes[i].y;
      double d = std::sqrt(dx[i] * dx[i] + dy[i] * dy[i]) + 1e-9;
      double step = std::min(d, temp);
      nodes[i].x += dx[i] / d * step;
      nodes[i].y += dy[i] / d * step;
    }
  }
  // Remove overlaps: push apart nodes closer than their radii (in layout units,
  // matching GraphCanvas::radius() for a canvas about 700 px wide).
  double maxSize = 1;
  for (const auto& nd : nodes) maxSize = std::max(maxSize, nd.size);
  auto rad = [&](const GraphCanvas::Node& nd) { return nd.neuron >= 0 ? 0.012 : (8 + 22 * std::sqrt(nd.size / maxSize)) / 350.0; };
  double span = 0;
  for (const auto& nd : nodes) span = std::max({span, std::fabs(nd.x), std::fabs(nd.y)});
  for (auto& nd : nodes) nd.x /= std::max(span, 1e-9), nd.y /= std::max(span, 1e-9);
  for (int pass = 0; pass < 60 && !stop.load(); ++pass) {
    bool moved = false;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) {
        double ddx = nodes[i].x - nodes[j].x, ddy = nodes[i].y - nodes[j].y;
        double d = std::sqrt(ddx * ddx + ddy * ddy) + 1e-9, want = rad(nodes[i]) + rad(nodes[j]) + 0.01;
        if (d >= want) continue;
        double push = (want - d) / 2 / d;
        nodes[i].x += ddx * push, nodes[i].y += ddy * push;
        nodes[j].x -= ddx * push, nodes[j].y -= ddy * push;
        moved = true;
      }
    if (!moved) break;
  }
  // Normalise into [-1, 1].
  double minx = 1e9, maxx = -1e9, miny = 1e9, maxy = -1e9;
  for (const auto& nd : nodes) minx = std::min(minx, nd.x), maxx = std::max(maxx, nd.x), miny = std::min(miny, nd.y), maxy = std::max(maxy, nd.y);
  for (auto& nd : nodes) {
    nd.x = maxx > minx ? (nd.x - minx) / (maxx - minx) * 2 - 1 : 0;
    nd.y = maxy > miny ? (nd.y - miny) / (maxy - miny) * 2 - 1 : 0;
  }
}

}  // namespace

struct LayoutJob {
  std::atomic<bool> stop{false};
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
  for (int L : rec_->layers)
    if (part_->labels.count(L)) layers.push_back(L);
  setLayers(layers);
  const int L = layer();
  if (L < 0 || part_->dFF != rec_->dFF || !rec_->hasCoact()) {
    setEmptyState(QString("Partition %1 does not fit the recording (d_ff %2 vs %3), or the recording has no co-activation.")
                      .arg(part_->name).arg(part_->dFF).arg(rec_->dFF));
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
  const int F = rec_->dFF, E = part_->experts;
  const auto& lab = part_->labels.at(L);
  const auto& st = rec_->stats.at(L);
  std::vector<int> sizes = part_->sizes(L);
  std::vector<double> usage(E, 0.0);
  for (int i = 0; i < F; ++i) usage[lab[i]] += st.count[i] / double(rec_->tokens);
  for (int e = 0; e < E; ++e) usage[e] = sizes[e] ? usage[e] / sizes[e] : 0;
  // Inter-expert co-activation: mean pairwise count between their neurons.
  std::vector<double> W(size_t(E) * E, 0.0);
  for (int i = 0; i < F; ++i) {
    const int32_t* row = C->data() + size_t(i) * F;
    double* wr = W.data() + size_t(lab[i]) * E;
    for (int j = 0; j < F; ++j)
      if (i != j) wr[lab[j]] += row[j];
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
  double umax = *std::max_element(usage.begin(), usage.end());
  if (expanded_ >= 0 && expanded_ < E) {
    std::vector<int> members;
    for (int i = 0; i < F; ++i)
      if (lab[i] == expanded_) members.push_back(i);
    if (members.size() > 200) members.resize(200);
    int base = static_cast<int>(nodes.size());
    double cmax = 1;
    for (int a : members)
      for (int b : members)
        if (a != b) cmax = std::max(cmax, double((*C)[size_t(a) * F + b]));
    for (int i : members) {
      double f = st.count[i] / double(rec_->tokens);
      nodes.push_back({expanded_, i, 1, f, 0, 0});
      umax = std::max(umax, f);
      edges.push_back({expanded_, static_cast<int>(nodes.size()) - 1, 0.6});
    }
    for (size_t a = 0; a < members.size(); ++a)
      for (size_t b = a + 1; b < members.size(); ++b) {
        double w = (*C)[size_t(members[a]) * F + members[b]] / cmax;
        if (w > 0.5) edges.push_back({base + int(a), base + int(b), w * 0.5});
      }
  }
  canvas_->usageMax = umax;
  canvas_->title = QString("Experts of layer %1 (%2, %3 experts)%4").arg(L).arg(part_->name).arg(E)
                       .arg(expanded_ >= 0 ? QString(", expert %1 expanded").arg(expanded_) : QString());
  canvas_->selectedExpert = ctx()->selectedLayer() == L ? ctx()->selectedExpert() : -1;
  canvas_->selectedNeuron = ctx()->selectedLayer() == L ? ctx()->selectedNeuron() : -1;
  // Lay out on a worker thread; the canvas shows the result when it arrives.
  auto& slot = g_layouts[this];
  if (slot) {
    slot->stop = true;
    if (slot->thread) slot->thread->wait();
  }
  slot = std::make_shared<LayoutJob>();
  auto job = slot;
  canvas_->nodes.clear();
  canvas_->edges.clear();
  canvas_->update();
  note_->setText("Computing the layout...");
  QPointer<ExpertGraphView> self(this);
  const int iters = nodes.size() > 120 ? 250 : 400;
  job->thread = QThread::create([self, job, nodes, edges, iters]() mutable {
    forceLayout(nodes, edges, iters, job->stop);
    if (job->stop) return;
    QMetaObject::invokeMethod(
        self, [self, job, nodes = std::move(nodes), edges = std::move(edges)]() mutable {
          if (!self || job->stop) return;
          self->canvas_->nodes = std::move(nodes);
          self->canvas_->edges = std::move(edges);
          self->canvas_->update();
          self->note_->setText(QString("%1 nodes, %2 edges (force layout computed off the GUI thread).")
                                   .arg(self->canvas_->nodes.size()).arg(self->canvas_->edges.size()));
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
