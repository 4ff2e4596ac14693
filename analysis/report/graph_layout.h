#pragma once
// Node-link layouts for the expert and neuron graphs, computed by Graphviz's
// sfdp (a multilevel force-directed layout, Hu 2005, with Barnes-Hut
// repulsion): O(n log n) per level instead of the O(n^2) per iteration of a
// plain Fruchterman-Reingold loop, so thousands of neurons lay out in seconds.
// Qt-free; the studio runs it on a worker thread.
#include <array>
#include <cstdint>
#include <vector>

namespace moefy {

class JobContext;

namespace report {

/// An undirected edge between node indices in [0, nodes). sfdp gives every
/// edge the same ideal length (it ignores weights): pass the edges that should
/// shape the picture, e.g. each expert's strongest links.
struct LayoutEdge {
  int a = 0, b = 0;
};

struct LayoutOptions {
  /// Seed of sfdp's random initial placement: the same graph and seed give
  /// the same layout on every run and every redraw.
  uint64_t seed = 1;
  /// Per-node radius [nodes] in layout units (1 = one ideal edge length);
  /// empty = points. With radii and at most 2000 nodes, overlapping nodes are
  /// pushed apart (Graphviz prism).
  std::vector<double> radius;
};

/// Lays out `nodes` nodes joined by `edges` and returns their centres [nodes]
/// scaled into [-1, 1]^2 (aspect ratio kept; a single node sits at 0, 0).
/// Self-loops and repeated edges are ignored. Throws ParameterError for an edge
/// naming a node outside [0, nodes), a negative node count or a radius list of
/// the wrong length; Error if Graphviz fails; CancelledError if `job` is
/// cancelled (checked before and after the layout: sfdp itself is not
/// interruptible, and takes seconds for ~10^4 nodes).
/// Thread-safety: Graphviz keeps global state, so calls are serialised by a
/// mutex; it is safe to call from any thread. Reseeds the C library's rand()
/// and drand48() with the seed (sfdp draws from them).
std::vector<std::array<double, 2>> layoutGraph(int nodes, const std::vector<LayoutEdge>& edges,
                                               const LayoutOptions& options, JobContext& job);

}  // namespace report
}  // namespace moefy
