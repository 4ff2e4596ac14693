#include "analysis/report/graph_layout.h"

#include <graphviz/cgraph.h>
#include <graphviz/gvc.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"

namespace moefy::report {

namespace {

// Graphviz's layout engines keep global state (the current graph, plugin
// tables): one layout at a time in this process.
std::mutex& graphvizMutex() {
  static std::mutex m;
  return m;
}

// cgraph takes char* for names and values it never modifies.
char* mut(const char* s) { return const_cast<char*>(s); }

struct GvcDeleter {
  void operator()(GVC_t* g) const { gvFreeContext(g); }
};
struct GraphDeleter {
  void operator()(Agraph_t* g) const { agclose(g); }
};

}  // namespace

std::vector<std::array<double, 2>> layoutGraph(int nodes, const std::vector<LayoutEdge>& edges,
                                               const LayoutOptions& options, JobContext& job) {
  if (nodes < 0) throw ParameterError("graph layout: node count " + std::to_string(nodes) + " is negative");
  if (!options.radius.empty() && static_cast<int>(options.radius.size()) != nodes)
    throw ParameterError("graph layout: " + std::to_string(options.radius.size()) + " radii for " +
                         std::to_string(nodes) + " nodes");
  for (const auto& e : edges)
    if (e.a < 0 || e.b < 0 || e.a >= nodes || e.b >= nodes)
      throw ParameterError("graph layout: edge " + std::to_string(e.a) + "-" + std::to_string(e.b) +
                           " names a node outside [0, " + std::to_string(nodes) + ")");
  job.checkCancel();
  std::vector<std::array<double, 2>> pos(static_cast<size_t>(nodes), {0.0, 0.0});
  if (nodes <= 1) return pos;

  std::lock_guard<std::mutex> lock(graphvizMutex());
  std::unique_ptr<GVC_t, GvcDeleter> gvc(gvContext());
  if (!gvc) throw Error("graph layout: Graphviz context unavailable");
  std::unique_ptr<Agraph_t, GraphDeleter> g(agopen(mut("layout"), Agstrictundirected, nullptr));
  if (!g) throw Error("graph layout: cannot create a Graphviz graph");
  const std::string seed = std::to_string(options.seed % 2147483647ull);
  agattr(g.get(), AGRAPH, mut("start"), mut(seed.c_str()));
  // prism removes node overlaps while keeping the layout's shape; it costs
  // more than the layout itself on thousands of nodes, where nodes are points.
  const bool removeOverlap = !options.radius.empty() && nodes <= 2000;
  agattr(g.get(), AGRAPH, mut("overlap"), mut(removeOverlap ? "prism" : "true"));
  // The fast quadtree (Barnes-Hut) halves the time on thousands of nodes.
  agattr(g.get(), AGRAPH, mut("quadtree"), mut("fast"));
  agattr(g.get(), AGNODE, mut("shape"), mut("circle"));
  agattr(g.get(), AGNODE, mut("fixedsize"), mut("true"));
  agattr(g.get(), AGNODE, mut("width"), mut("0.05"));
  agattr(g.get(), AGNODE, mut("label"), mut(""));
  // Graphviz measures node sizes in inches and the default edge length K is
  // 0.3 inches: a radius of 1 layout unit (one edge length) is 0.3 inches.
  const double inchPerUnit = 0.3;
  std::vector<Agnode_t*> handles(static_cast<size_t>(nodes));
  for (int i = 0; i < nodes; ++i) {
    const std::string name = "n" + std::to_string(i);
    handles[static_cast<size_t>(i)] = agnode(g.get(), mut(name.c_str()), 1);
    if (!options.radius.empty()) {
      const std::string w = std::to_string(std::max(0.01, 2 * options.radius[static_cast<size_t>(i)] * inchPerUnit));
      agsafeset(handles[static_cast<size_t>(i)], mut("width"), mut(w.c_str()), mut("0.05"));
    }
  }
  for (const auto& e : edges)
    if (e.a != e.b) agedge(g.get(), handles[static_cast<size_t>(e.a)], handles[static_cast<size_t>(e.b)], nullptr, 1);
  job.checkCancel();
  // sfdp draws its initial placement and its coarsening from the C library's
  // generators, not from "start": seed them too (under the mutex) so that a
  // layout is the same on every run.
  std::srand(static_cast<unsigned>(options.seed));
  srand48(static_cast<long>(options.seed));
  if (gvLayout(gvc.get(), g.get(), "sfdp") != 0) throw Error("graph layout: Graphviz sfdp failed");
  double minX = 1e300, maxX = -1e300, minY = 1e300, maxY = -1e300;
  for (int i = 0; i < nodes; ++i) {
    const pointf c = ND_coord(handles[static_cast<size_t>(i)]);
    pos[static_cast<size_t>(i)] = {c.x, c.y};
    minX = std::min(minX, c.x), maxX = std::max(maxX, c.x), minY = std::min(minY, c.y), maxY = std::max(maxY, c.y);
  }
  gvFreeLayout(gvc.get(), g.get());
  job.checkCancel();
  // Into [-1, 1]^2 about the centre, keeping the aspect ratio.
  const double span = std::max({maxX - minX, maxY - minY, 1e-9});
  const double cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  for (auto& p : pos) p = {(p[0] - cx) / span * 2, (p[1] - cy) / span * 2};
  return pos;
}

}  // namespace moefy::report
