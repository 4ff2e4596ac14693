#pragma once
// The quality-versus-FFN-FLOPs front (issue 17, "Measuring on one axis"):
// every compute-budget method of the pipeline measured at the same FFN FLOP
// budgets on the same held-out sequences, written as FRONT_DIR/front.json
// (docs/formats.md "Front") with its figures. `moefy front` and `moefy demo`
// call runFront; the studio and the demo report read the file with readFront.
//
// Methods (docs/moe.md):
//   plain      MoEfication: a split into E experts (coact by default) and an
//              mlp router, top-k.
//   per-layer  the plain split and mlp router with the budget shared out
//              across layers (route --budget B --allocate activity|greedy,
//              analysis/moe/layer_budget.h): each layer at its own k, one
//              router folder per budget.
//   shared     the same split with a shared expert (split --shared auto) and
//              an mlp router over the E routed experts.
//   dynamic-k  the shared split with a dynamic-k router (tau), at most k
//              experts per token.
//   bound      the top-k activation bound: per token the round(B d_ff)
//              neurons with the largest |h| (a reference, not a method: it
//              needs the dense hidden, so it saves no compute).
// Matching to a budget B (a fraction of the dense FFN's multiply-adds per
// token, router and shared expert included, analysis/moe/ffn_flops.h): a
// method's operating point at B is its largest top-k whose FFN FLOPs per
// token do not exceed B (dynamic-k: its largest cap k; the tokens take k or
// fewer, so its measured point spends at most B; per-layer: the allocation of
// B, which spends at most B by construction). A budget no top-k meets (the
// shared expert alone over B; per-layer: one expert in every layer over B)
// has no point for that method. The
// operating points are evaluated by runEvaluation, so each equals the
// corresponding `moefy eval --sweep` result.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/report/chart.h"
#include "analysis/text/corpus.h"

namespace moefy {

class JobContext;

/// The method names runFront knows, in their display order.
const std::vector<std::string>& frontMethodNames();

struct FrontOptions {
  std::vector<std::string> methods = frontMethodNames();  ///< subset of frontMethodNames()
  std::vector<double> budgets = {0.125, 0.25, 0.5};       ///< FFN FLOP fractions in (0, 1], ascending
  int experts = 32;                                       ///< routed experts per layer (E)
  std::string splitMethod = "coact";                      ///< coact | kmeans | random
  int64_t recordTokens = 32768;                           ///< tokens recorded on the training corpus
  int64_t samples = 4096;                                 ///< sampled rows the routers train on
  int64_t evalTokens = 4096;                              ///< held-out tokens evaluated (0 = all)
  int seqLen = 128;                                       ///< window length (recording and evaluation)
  Split evalSplit = Split::All;                           ///< documents of the held-out corpus evaluated
  int epochs = 30;                                        ///< router training epochs
  double tau = 0.8;                                       ///< dynamic-k: share of the predicted output norm to cover
  std::string allocate = "activity";                      ///< per-layer: activity | greedy (route --allocate)
  /// An existing recording of the model to split and train the routers on
  /// instead of recording TRAIN_CORPUS (recordTokens and samples unused);
  /// empty = record.
  std::filesystem::path recording;
  int batch = 8;                                          ///< sequences per forward pass in the evaluation
  uint64_t seed = 0;                                      ///< seed of every step
};

/// Checks options: methods known and not repeated, at least one, budgets in
/// (0, 1] and distinct (sorted on return), experts >= 1, tau in (0, 1],
/// allocate activity or greedy, a recording only with a method that uses
/// one. Throws ParameterError naming --methods / --budgets / --experts /
/// --tau / --allocate / --recording.
void checkFrontOptions(FrontOptions& options);

/// One operating point of a method at one budget.
struct FrontPoint {
  double budget = 0;            ///< the requested FFN FLOP fraction
  double ffnFlopsFraction = 0;  ///< measured (eval.json ffn_flops_fraction)
  double perplexity = 0;
  double top1Agreement = 0;
  double fraction = 0;  ///< k/E (dynamic-k: the cap), the bound: its neuron budget
  double meanK = 0;     ///< mean experts per token over the MoE layers (the bound: 0)
  /// per-layer: this point's router folder, relative to the front folder
  /// (its allocation for this budget); empty: the method's routerDir.
  std::string routerDir;
};

struct FrontMethod {
  std::string name;                ///< plain | per-layer | shared | dynamic-k | bound
  std::string router;              ///< the router kind ("topk-act" for the bound)
  std::string eval;                ///< its evaluation folder, relative to the front folder
  std::string partition;           ///< relative; empty for the bound
  std::string routerDir;           ///< relative; empty for the bound; per-layer: the folder of its points' routers
  std::vector<double> sweep;       ///< the --sweep of its evaluation (per-layer: empty, each router at its own k)
  std::vector<FrontPoint> points;  ///< one per reached budget, ascending
  std::vector<double> unreached;   ///< budgets without an operating point
};

struct FrontBest {
  double budget = 0;
  std::string method;  ///< empty: no method reaches the budget
  double perplexity = 0;
  double plainPerplexity = 0;  ///< 0 when plain has no point here or was not run
};

/// The content of front.json.
struct FrontResult {
  std::vector<double> budgets;
  int experts = 0;
  double densePerplexity = 0, denseLoss = 0;
  std::vector<FrontMethod> methods;  ///< in frontMethodNames() order, the bound last when run
  std::vector<FrontBest> best;       ///< per budget: the lowest-perplexity method (the bound excluded)
  nlohmann::json document;           ///< the front.json document as read or written

  /// The method named `name`, or null.
  const FrontMethod* method(const std::string& name) const;
  /// Its point at `budget` (exact match), or null.
  static const FrontPoint* pointAt(const FrontMethod& m, double budget);
  /// Validates and converts a front.json document. Throws FormatError naming
  /// `where` and the key ("front.json: methods[1].points[0].perplexity: ...").
  static FrontResult fromJson(const nlohmann::json& doc, const std::string& where);
};

/// Reads and validates DIR/front.json (readJsonFile, then
/// FrontResult::fromJson). Throws IoError / FormatError naming the file.
FrontResult readFront(const std::filesystem::path& dir);

/// Runs the front into the existing, empty folder `dir` (the caller's
/// temporary, see writeFrontFolder): loads `modelDir` (a dense single-stack
/// model with a tokenizer), records `trainCorpus` into dir/recording (or uses
/// options.recording, checked against the model), splits into
/// dir/partitions/{plain,shared}, builds the routers into
/// dir/routers/{plain-mlp,per-layer/<budget>,shared-mlp,shared-dynamic-k},
/// evaluates each method
/// on `heldoutCorpus` into dir/eval/<method> (eval.json, as `moefy eval`
/// writes it), then writes dir/front.json and the figures
/// dir/front_perplexity.{svg,png} and dir/front_top1.{svg,png}. Steps the
/// chosen methods do not need are skipped. Returns the front. Progress and
/// cancel through `job` (each step's own stages). Throws ParameterError
/// (checkFrontOptions; a MoE export or encoder-decoder model), and the
/// errors of the steps, naming their files.
FrontResult runFront(const std::filesystem::path& modelDir, const std::filesystem::path& trainCorpus,
                     const std::filesystem::path& heldoutCorpus, FrontOptions options, const std::filesystem::path& dir,
                     JobContext& job);

/// runFront into OUT atomically (writeFolderAtomic): nothing is left at OUT
/// on error or cancel; an existing OUT is replaced only with `force` and only
/// if it is a front folder. Throws IoError naming OUT, and runFront's errors.
FrontResult writeFrontFolder(const std::filesystem::path& modelDir, const std::filesystem::path& trainCorpus,
                             const std::filesystem::path& heldoutCorpus, const FrontOptions& options,
                             const std::filesystem::path& out, bool force, JobContext& job);

/// The two figures of a front: held-out perplexity (index 0) and top-1
/// agreement with dense (index 1) against the FFN FLOP fraction, one series
/// per method, the bound at its neuron budget (it spends the dense FFN's
/// hidden besides: its own FLOP fraction is in front.json) and dense as a
/// horizontal reference line.
std::vector<report::Chart> frontCharts(const FrontResult& front);

/// The text table `moefy front` prints: one row per method and budget
/// (measured FLOP fraction, k/E, mean k, perplexity, top-1), then the best
/// method per budget and its gain over plain.
std::string frontTable(const FrontResult& front);

}  // namespace moefy
