#pragma once
// Per-layer budgets (issue 17, method 5): a global FFN FLOP budget shared out
// as a number of experts per token for every MoE site. The budget is a
// fraction of the dense FFN FLOPs of the routed sites, router included, in
// the accounting eval reports (analysis/moe/ffn_flops.h ffnFlops: per site,
// (m + 1) d_model n + R for n computed neurons and the router's R).
//
// Why: the recorded activity is uneven across layers (the bundled model's
// layer 0 has 44 % of its neurons active per token, the others 12-16 %,
// issue 17), so the same k everywhere over-serves some layers and starves
// others. Two allocation rules, each starting at `minK` experts per site
// (1, or dynamic-k's --min-k) and adding one expert at a time to the site
// chosen below while the total FLOPs stay within the budget (a site whose
// next expert does not fit is skipped; the rule stops when none fits):
//   activity  Adams' divisor method on the recorded activity: the next
//             expert goes to the site with the largest w_i / k_i, where
//             w_i = a_i E_i, a_i the site's mean share of active neurons per
//             token over the recording (record/sparsity.h meanActiveShare,
//             sum(count) / (tokens d_ff)) and E_i its experts: k_i follows
//             w_i, i.e. each layer's mean active neurons per token measured
//             in experts, rounded to whole experts.
//   greedy    a held-out quality probe: the next expert goes to the site
//             whose relative output error drops most per FLOP,
//             (err_i(k_i) - err_i(k_i + 1)) / (F_i(k_i + 1) - F_i(k_i)),
//             err_i(k) from probeLayerError on the held-out recorded samples.
// Ties go to the lower site index. "Fits" means sum_i F_i(k_i) <=
// budget * sum_i dense_i * (1 + 1e-12) (the slack absorbs rounding only).
// scripts/ref/layer_budget_ref.py computes both rules independently.
#include <ATen/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/route/router.h"

namespace moefy {

class JobContext;
class Model;
struct MoeLayerWeights;
struct PartitionData;
struct RouteOptions;
struct SampleData;

/// The FFN FLOPs of one MoE site as a function of its experts per token.
struct LayerFlopTable {
  double dense = 0;           ///< multiply-adds per token of the site's dense FFN
  std::vector<double> flops;  ///< flops[k - 1]: with k routed experts per token, k = 1..E
  int experts() const { return static_cast<int>(flops.size()); }
};

/// Per partition entry, ffnFlops of the MoE with k = 1..E experts: d_model,
/// d_ff and gated from `model`, the router `kind`, neurons = the entry's
/// shared expert + k (d_ff - shared) / E (the mean routed expert size; equal
/// sizes for every split method's partitions). Throws ParameterError as ffnFlops.
std::vector<LayerFlopTable> layerFlopTables(const Model& model, const PartitionData& part, RouterKind kind);

/// sum_i tables[i].flops[k[i] - 1] / sum_i tables[i].dense. Throws
/// ParameterError for a k outside [1, E] or a length mismatch.
double allocationFlopsFraction(const std::vector<int>& k, const std::vector<LayerFlopTable>& tables);

/// The activity rule (see the top of this file). `activity[i]` = a_i >= 0,
/// `budget` in (0, 1]. Returns k per site, in [minK, E_i]. Throws
/// ParameterError naming --budget when budget is outside (0, 1] or below
/// the FLOPs of minK experts at every site (the message gives that floor),
/// and for sizes that disagree or minK above some E_i. Pure, thread-safe.
std::vector<int> allocateByActivity(const std::vector<double>& activity, const std::vector<LayerFlopTable>& tables,
                                    double budget, int minK = 1);

/// The greedy rule (see the top of this file). `error[i][k - 1]` = err_i(k)
/// for k = 1..E_i (finite). Same result range and errors as allocateByActivity.
std::vector<int> allocateGreedy(const std::vector<std::vector<double>>& error,
                                const std::vector<LayerFlopTable>& tables, double budget, int minK = 1);

/// The quality probe of the greedy rule for one site: err(k) for k = 1..E,
/// the relative output error sqrt(sum ||y_k - y||^2 / sum ||y||^2) over the
/// rows of x [N, d_model], y the dense FFN output (all experts, b2 and a
/// shared expert included) and y_k the MoE output with the k experts the
/// router scores highest for the token (stable descending sort of
/// router.scores, the lower id first on ties; dynamic-k: its largest k).
/// err(E) is 0 up to float summation. Throws ParameterError for N == 0.
std::vector<double> probeLayerError(const MoeLayerWeights& weights, const LayerRouter& router, const at::Tensor& x);

/// `moefy route` with the options' budget: without one (budget 0),
/// buildRouters. With one: the allocation rule options.allocate ("activity":
/// activity from the recording in `recordingDir`, read before any router is
/// built; "greedy": routers built first, then the probe on each site's
/// held-out samples, the split buildRouters uses) sets each entry's top_k,
/// the metrics are those of that k, and RouterSet::allocation holds the
/// block docs/formats.md describes (budget, method, source, min_k, the
/// activity or the probe errors, flops_fraction, layer_flops_fraction,
/// flops_share). Throws ParameterError (--budget, --allocate, --top-k or
/// --top-fraction given with --budget) and what buildRouters throws.
RouterSet buildRoutersWithBudget(const Model& model, const PartitionData& part, const SampleData& samples,
                                 const std::string& recordingDir, const RouteOptions& options, JobContext& job);

/// The report's table of an allocation block (RouterSet::allocation): header
/// {site, activity or probe error at k, k / E, FLOPs of the layer's dense,
/// share of the spent FLOPs} and one row per entry, numbers as text. Empty
/// rows for a router without an allocation.
void allocationTable(const RouterSet& routers, std::vector<std::string>& header,
                     std::vector<std::vector<std::string>>& rows);

}  // namespace moefy
