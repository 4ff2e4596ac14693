#pragma once
// Expert construction: split each layer's d_ff neurons into E experts of
// exactly d_ff / E neurons each, by co-activation graph partitioning (METIS),
// balanced k-means on the rows of W1, or a seeded random shuffle; and the
// quality metrics of a split. Artefact: docs/formats.md "Partition".
// Usage and metric definitions: docs/recording-and-splitting.md.
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/site.h"
#include "analysis/split/agreement.h"

namespace moefy {

class JobContext;
class Model;
class Recording;

// ------------------------------------------------------------ graph

/// An undirected graph in METIS CSR form (0-based, no self-loops, symmetric).
struct CoactGraph {
  int64_t n = 0;
  std::vector<int32_t> xadj;    ///< [n + 1]
  std::vector<int32_t> adjncy;  ///< [2m]
  std::vector<int32_t> adjwgt;  ///< [2m], >= 1
  /// The factor every weight was multiplied by before rounding: 1, or less
  /// when the total would overflow METIS's 32-bit sums (a cut in these units
  /// is the unscaled cut times this).
  double weightScale = 1.0;
  int64_t edges() const { return static_cast<int64_t>(adjncy.size()) / 2; }
};

struct GraphOptions {
  /// raw: co-activation counts; jaccard: C_ij / (c_i + c_j - C_ij) x 1000;
  /// ppmi: max(0, log(C_ij N / (c_i c_j))) x 100 (both rounded; the unscaled
  /// values are coactJaccard / coactPpmi of analysis/split/coact_weight.h);
  /// percentile: MoEfication's integer weights floor(C_ij / (0.99 q)) with q
  /// the first non-zero of the 10th, 20th, ... percentiles of all entries,
  /// edges below 1 dropped.
  std::string weighting = "raw";
  /// Keep each neuron's top-k neighbours (union, symmetric); 0 = all;
  /// -1 = auto (resolveTopk).
  int topk = -1;
};

/// Layers with at most this many neurons keep the dense graph under topk auto.
inline constexpr int64_t kAutoTopkDenseLimit = 1536;

/// The top-k a GraphOptions means for a layer of n neurons split into
/// `experts` parts (0 = unknown): its topk if >= 0; for auto, 0 (dense) up to
/// kAutoTopkDenseLimit neurons, else max(64, 2 n / experts).
int resolveTopk(const GraphOptions& options, int64_t n, int experts);

/// The --topk option as text: "auto" (or empty) -> -1, else a count >= 0.
/// Throws ParameterError naming --topk.
int parseTopk(const std::string& text);

/// Builds the weighted graph from a co-activation matrix [n, n] (I32 counts or
/// F32 soft values; the diagonal is ignored except for the percentile), the
/// per-neuron active counts [n] and the token count. Integer weights are
/// scaled down uniformly if their total would overflow METIS's 32-bit sums.
/// `experts` (0 = unknown) only feeds topk auto.
CoactGraph buildCoactGraph(const at::Tensor& coact, const at::Tensor& count, int64_t tokens,
                           const GraphOptions& options, int experts = 0);

/// Writes the graph in METIS's .graph format (1-based, fmt 001: edge weights).
void writeMetisGraph(const CoactGraph& g, const std::filesystem::path& path);

// ------------------------------------------------------------ methods

/// How METIS cuts the graph into E parts: rb = METIS_PartGraphRecursive
/// (recursive bisection, gpmetis -ptype=rb), kway = METIS_PartGraphKway
/// (gpmetis's default, which the MoEfication recipe runs). On the dense
/// co-activation graphs of d_ff 1024-3072 (0.5-4.4 M edges) rb took a
/// quarter to a fifth of kway's time at an edge cut within 0.25 % of it
/// (lower on the bundled model; docs/recording-and-splitting.md "METIS").
enum class MetisPtype { Rb, Kway };

/// "rb" or "kway".
const char* metisPtypeName(MetisPtype ptype);

/// The --metis-ptype value as text. Throws ParameterError naming --metis-ptype.
MetisPtype parseMetisPtype(const std::string& text);

/// METIS partition (`ptype`) followed by exact balance repair (repairBalance).
/// Labels [n] in [0, E); the same seed and graph give the same labels.
/// Throws ParameterError when E does not divide n, Error when METIS fails.
/// The project calls it from one thread at a time (METIS 5.1 does not
/// document its thread-safety).
std::vector<int32_t> partitionCoact(const CoactGraph& g, int experts, uint64_t seed, MetisPtype ptype = MetisPtype::Rb);

/// Moves neurons out of over-full parts until every part has exactly n / E:
/// repeatedly the member of an over-full part with the least affinity (summed
/// edge weight) to its own part moves to the under-full part it has most
/// affinity to. Returns the number of moves.
int64_t repairBalance(const CoactGraph& g, int experts, std::vector<int32_t>& labels);

struct KmeansResult {
  std::vector<int32_t> labels;
  double inertia = 0;  ///< sum of squared distances of the normalised rows to their centroids
  int iterations = 0;  ///< of the kept restart
};
/// Balanced k-means on the L2-normalised rows of `rows` [n, d]: k-means++
/// seeding, then alternating equal-size assignment and centroid updates;
/// `restarts` runs, keeping the lowest inertia. The assignment is first a
/// greedy one (points by decreasing regret, each to its best expert with room
/// left) until at most 1 % of the labels change or for min(40, maxIter / 2)
/// iterations; then an auction on the capacitated assignment problem
/// (balancedAssign, warm-started from the previous iteration's prices and
/// assignment), solved to within (max - min benefit) / 16 of its optimum while
/// the labels change and to balancedAssign's / 256 once they stop changing,
/// until they stop changing again (or maxIter). The last assignment is the
/// auction's. The greedy phase replaced the auction's costliest iterations
/// (bench_peer, docs/recording-and-splitting.md); the coarse auction phase cut
/// its bids 4-7x on the GPT-2-small shape with the same final inertia.
/// The restarts run on OpenMP threads; the labels do not depend on the
/// thread count. Throws ParameterError for rows that are not [n, d], E not
/// dividing n, restarts or maxIter < 1, or a non-finite value in `rows`;
/// CancelledError when `job` is cancelled. Each restart's inertia, iterations
/// and auction bids go to job.log.
///
/// The dot products x_i . c_e of each iteration come either from a GEMM of
/// the rows with the centres (n E d multiply-adds per iteration) or from the
/// Gram matrix G = X X^T, made once for all restarts (n^2 d multiply-adds,
/// n^2 floats): with c_e the mean of its members, x_i . c_e = (sum over
/// members j of G[j][i]) / |e|, kept per expert in double and updated by the
/// rows of G of the points whose label changed (2n adds each), and |c_e|^2
/// likewise. `dots` picks one; Auto takes the Gram matrix when it costs at
/// most the GEMMs of 16 iterations per restart (n <= 16 E restarts) and at
/// most 1 GiB (kmeansUsesGram). Both give the same assignments up to float
/// rounding in near-ties.
enum class KmeansDots { Auto, Gram, Gemm };
/// Whether KmeansDots::Auto takes the Gram matrix for n rows, E experts and
/// `restarts` restarts (the rule above). Thread-safe.
bool kmeansUsesGram(int64_t n, int experts, int restarts);
KmeansResult balancedKmeans(const at::Tensor& rows, int experts, int restarts, int maxIter, uint64_t seed,
                            JobContext& job, KmeansDots dots = KmeansDots::Auto);

/// Seeded balanced shuffle.
std::vector<int32_t> partitionRandom(int64_t n, int experts, uint64_t seed);

/// Warm-start state of balancedAssign: per-slot prices ([n], slot k * n/E + r
/// belongs to label k) and each item's slot ([n]) from a previous call.
struct AuctionState {
  std::vector<double> price;
  std::vector<int64_t> slot;
};

/// Equal-capacity assignment maximising sum_i benefit[i, label_i] with each
/// label used exactly n / E times (auction algorithm with eps-scaling,
/// Bertsekas & Castanon 1989, "The auction algorithm for transportation
/// problems"; the total benefit is within (max - min benefit) / 256 of the
/// optimum). benefit: [n, E] F32 (read in place) or another numeric type
/// (converted to F64); values and prices are computed in F64 either way.
/// Throws ParameterError on a wrong shape, E not dividing n, or a non-finite
/// benefit. Not thread-safe for a shared `warm`.
/// `warm` (optional) warm-starts the auction from a previous call on similar
/// benefits (as in successive k-means iterations): its prices, and its
/// assignment where that still satisfies eps-complementary slackness; it
/// returns the final state. `bids` (optional) receives the number of bids made.
std::vector<int32_t> balancedAssign(const at::Tensor& benefit, int experts, AuctionState* warm = nullptr,
                                    int64_t* bids = nullptr);

// ------------------------------------------------------------ metrics

/// Share of the off-diagonal co-activation mass inside experts.
double coactInside(const at::Tensor& coact, const std::vector<int32_t>& labels);
/// Sum of co-activation counts over pairs {i, j} in different experts.
double edgeCut(const at::Tensor& coact, const std::vector<int32_t>& labels);
/// max expert size / (n / E) (1.0 = exactly balanced).
double sizeBalance(const std::vector<int32_t>& labels, int experts);
/// Oracle recall@k for k = 1..E: mean over tokens (with non-zero mass) of the
/// share of sum_i |h_i| held by the token's k best experts. act: [S, n].
std::vector<double> recallAtK(const at::Tensor& act, const std::vector<int32_t>& labels, int experts);
// Agreement between two labelings (adjustedRandIndex, normalizedMutualInfo,
// labelAgreement) and the pairwise agreement matrix: analysis/split/agreement.h.

/// Neuron ids grouped by expert (each group ascending).
std::vector<int32_t> permutationOf(const std::vector<int32_t>& labels, int experts);

// ------------------------------------------------------------ shared expert

/// `split --shared N|auto`: the layer's most frequently active neurons form one
/// shared expert that every token computes (CMoE, Pei et al. 2025, carves its
/// shared experts from the neurons with the highest activation rates;
/// DeepSeekMoE and LLaMA-MoE v2 keep always-on shared experts beside the
/// routed ones). The other d_ff - N neurons are split into E equal routed
/// experts by the method. docs/recording-and-splitting.md, "Shared expert".
struct SharedOptions {
  std::string mode;            ///< "" (no shared expert), "count" (N given) or "auto"
  int neurons = 0;             ///< count: N
  double mass = 0.25;          ///< auto: share of the activation mass the shared neurons cover
  double maxFraction = 0.125;  ///< auto: N <= maxFraction d_ff
  bool enabled() const { return !mode.empty(); }
};

/// The --shared option as text: "" -> none, "auto", or a neuron count >= 1.
/// Throws ParameterError naming --shared.
SharedOptions parseShared(const std::string& text);

/// N for one layer from its activation counts count [d_ff] (I64: tokens on
/// which each neuron was active, stats.safetensors blk.L.count) and E routed
/// experts. Valid N leave E equal routed experts: (d_ff - N) % E == 0 and
/// N <= d_ff - E.
///  - count: N as given; ParameterError naming --shared (with the nearest
///    valid counts) if it is not valid.
///  - auto: the smallest N whose most active neurons hold at least `mass` of
///    sum_i count_i (the activation mass: active (token, neuron) pairs),
///    capped at floor(maxFraction d_ff); then rounded up to the next valid
///    N, or down when that passes the cap (0: the layer gets no shared
///    expert). 0 when no neuron was ever active.
/// `context` names the layer in errors. Thread-safe.
int sharedNeuronCount(const at::Tensor& count, int experts, const SharedOptions& options, const std::string& context);

/// The n most frequently active neurons of count [d_ff] (ties: the lower id
/// first), in ascending id order.
std::vector<int32_t> mostActiveNeurons(const at::Tensor& count, int n);

// ------------------------------------------------------------ artefact

struct SplitOptions {
  std::string method = "coact";  ///< coact | kmeans | random
  int experts = 0;               ///< E (or 0 with expertSize)
  int expertSize = 0;            ///< S = d_ff / E
  std::vector<int> layers;       ///< site indices (--layers); empty = see `sites`
  /// --sites: recorded site names (blk.2, dec.blk.0, blk.1.exp.3, blk.1.shared),
  /// or blk.L of a native MoE layer for its recorded expert sites; empty (with
  /// `layers` empty) = every recorded site.
  std::vector<std::string> sites;
  uint64_t seed = 0;
  GraphOptions graph;
  std::string graphSource = "binary";  ///< coact: binary counts or soft (needs --soft-coact at record time)
  MetisPtype metisPtype = MetisPtype::Rb;  ///< coact: METIS recursive bisection or k-way
  std::string rows = "up";             ///< kmeans on gated FFNs: gate | up | both
  int restarts = 4;
  int maxIter = 50;
  bool stability = true;            ///< rerun with seed + 1 and report ARI/NMI
  std::filesystem::path modelPath;  ///< kmeans: model folder (default: the recording's)
  SharedOptions shared;             ///< --shared: a shared expert per layer (then E counts routed experts)
  bool force = false;
};

/// Resolves E from experts / expertSize against d_ff. Throws ParameterError
/// naming the option when E does not divide d_ff or E > d_ff.
int resolveExperts(int dFF, int experts, int expertSize);

/// The recorded site indices a split covers: options.layers, or the sites
/// options.sites names, or every recorded site; in recording order. They must
/// share one width (the partition's d_ff): a native MoE recording's experts
/// (d_expert), its shared experts (d_shared) and dense layers (d_ff) are
/// split separately. Throws ParameterError naming the option and the site
/// (an unrecorded one, a mixed width, one given twice). Thread-safe.
std::vector<int> resolveSplitSites(const Recording& rec, const SplitOptions& options);

/// Splits every requested layer of `rec` and writes PART_DIR atomically.
/// Expert sites (blk.L.exp.E of a native MoE recording) split the expert's
/// FFN into finer experts from the statistics of the tokens routed to it;
/// their sample-based metrics (recall@k, half stability) use the sampled
/// tokens routed to the expert.
/// Returns partition.json. `model` is needed for kmeans (else may be null).
/// With options.shared, each layer's shared neurons (sharedNeuronCount,
/// mostActiveNeurons on the recorded counts) get label E and the method
/// splits the others into E experts; the metrics then describe the routed
/// experts (on the routed neurons) plus shared_neurons and shared_mass.
nlohmann::json runSplit(const Recording& rec, const Model* model, const SplitOptions& options,
                        const std::filesystem::path& out, JobContext& job);

/// A partition folder, validated on open.
class Partition {
 public:
  static Partition open(const std::filesystem::path& dir);
  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& json() const { return json_; }
  int experts() const { return experts_; }
  int dFF() const { return dFF_; }
  /// Partitioned site indices (analysis/model/site.h "Site indices").
  const std::vector<int>& layers() const { return layers_; }
  /// Their sites, parallel to layers().
  const std::vector<Site>& sites() const { return sites_; }
  /// The site of a partitioned site index (ParameterError if absent).
  Site site(int layer) const;
  const std::string& method() const { return method_; }
  const std::string& fingerprint() const { return fingerprint_; }
  /// Labels [d_ff] of a layer (ParameterError if absent); label E marks the
  /// shared expert's neurons when the layer has one.
  std::vector<int32_t> labels(int layer) const;
  /// Neurons of the layer's shared expert (partition.json shared.neurons), 0 = none.
  int sharedNeurons(int layer) const;
  at::Tensor labelsTensor(int layer) const;  ///< I32 [d_ff]
  at::Tensor perm(int layer) const;          ///< I32 [d_ff]

 private:
  std::filesystem::path dir_;
  nlohmann::json json_;
  int experts_ = 0, dFF_ = 0;
  std::vector<int> layers_;
  std::vector<Site> sites_;
  std::string method_, fingerprint_;
  std::vector<std::pair<int, at::Tensor>> labels_, perm_;
  std::vector<std::pair<int, int>> shared_;  ///< layer -> shared neurons (layers with one)
};

/// Side-by-side metrics and pairwise agreement (ARI/NMI per shared layer,
/// labelAgreement): {"partitions": [{dir, method, experts, seed, options,
/// metrics}], "agreement": [{a, b, layer, ari, nmi}]}, a < b indexing `parts`,
/// one entry per pair and site index both partition. Throws ParameterError
/// for fewer than two partitions, or when they disagree on d_ff or on the
/// model fingerprint.
nlohmann::json comparePartitions(const std::vector<Partition>& parts);

}  // namespace moefy
