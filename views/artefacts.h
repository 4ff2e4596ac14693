#pragma once
// The studio's plain-data wrappers over the core's artefact readers
// (analysis/project/artefact.h: one validating reader per kind) and figures
// (analysis/route/router_scores.h, ...). Nothing here opens or parses an
// artefact file: each open() calls the core reader and copies what the
// widgets draw into Qt-friendly fields. Only artefacts.cpp touches tensors, so
// the widgets compile without libtorch headers. Every loader throws the core's
// moefy::Error subclasses, whose message names the file and tensor (the same
// one-line error the CLI prints).
#include <QString>
#include <QStringList>

#include "analysis/model/site.h"
#include "analysis/record/sparsity.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

namespace moefy {
struct LoadedModel;
class Tokenizer;
class JobContext;
class Recording;
class Partition;
struct RouterSet;
struct RouterChoices;
struct FrontResult;
}  // namespace moefy

namespace moefy::views {

/// workspace.json: a folder holding the model/corpus references, settings and
/// one sub-folder per artefact kind.
struct Workspace {
  QString dir;  ///< absolute folder of workspace.json
  QString name;
  QString modelPath;       ///< as stored (relative to dir or absolute)
  QString corpusPath;      ///< the training corpus (record, route), as stored
  QString evalCorpusPath;  ///< the evaluation corpus as stored ("" = the held-out split of corpusPath)
  nlohmann::json settings = nlohmann::json::object();
  std::map<std::string, QString> folders;  ///< kind -> sub-folder ("recordings", ...)

  /// recordings, partitions, routers, evaluations, fronts, analyses, exports, calibrated, figures
  static const QStringList& kinds();
  QString resolve(const QString& path) const;  ///< relative paths resolved against dir
  QString model() const { return resolve(modelPath); }
  QString corpus() const { return resolve(corpusPath); }
  /// The corpus evaluations read (moefy::Workspace::evalCorpus): the
  /// evaluation corpus, else the training corpus.
  QString evalCorpus() const;
  /// Whether the evaluation corpus is not the training corpus (then
  /// evaluations read it whole; else its held-out split).
  bool separateEvalCorpus() const;
  QString folder(const std::string& kind) const;

  /// Reads DIR/workspace.json with the core reader (moefy::Workspace::load).
  /// Throws FormatError/IoError naming the file.
  static Workspace load(const QString& dir);
  /// A new workspace description (not yet written).
  static Workspace create(const QString& dir, const QString& name, const QString& model, const QString& corpus);
  /// Writes workspace.json atomically and creates the artefact folders.
  void save() const;
  nlohmann::json toJson() const;
};

/// One artefact folder found in a workspace.
struct ArtefactRef {
  QString kind;     ///< "recording", "partition", "router", "evaluation", "front", "analysis", "export"
  QString path;     ///< folder
  QString name;     ///< folder name
  QString summary;  ///< one line for the tree's tooltip
  bool readable = true;  ///< the kind's reader opened it (false: `summary` is "unreadable: <error>")
};
/// The workspace's artefacts as the core's Project scan finds them (every
/// kind folder, the folder itself and sub-folders up to depth 3; identified
/// by metadata file), grouped by kind and sorted by name. Calibrated exports
/// are listed with kind "export". `summary` is the kind reader's line or
/// "unreadable: <error>".
std::vector<ArtefactRef> scanArtefacts(const Workspace& ws);
/// One line per broken or stale link of the workspace's artefacts
/// (moefy::Project::linkProblems), naming the artefact, the role and the
/// target. Reads linked artefacts' files for their fingerprints: run it off
/// the GUI thread.
QStringList linkProblems(const Workspace& ws);

/// How figures name FFN site `site` (site index `layer`): "layer 3" for a
/// single-stack site (as the views always have), the site name ("dec.blk.1")
/// otherwise; capitalised ("Layer 3") when `capital`.
QString siteText(const moefy::Site& site, int layer, bool capital = false);

/// A recording (manifest + stats; coact and samples read lazily per layer).
class Recording {
 public:
  static std::shared_ptr<Recording> open(const QString& dir);

  QString dir;
  nlohmann::json manifest;
  int64_t tokens = 0;  ///< tokens of every stream (an encoder-decoder recording: encoder + decoder tokens)
  int dFF = 0;         ///< the model's d_ff (a native MoE recording's sites have their own widths: widthOf)
  int dModel = 0;
  /// Recorded site indices (analysis/model/site.h "Site indices": the layer
  /// for single-stack models; enc.blk.L -> L, dec.blk.L -> encoder layers + L).
  std::vector<int> layers;
  std::vector<moefy::Site> sites;  ///< the recorded sites, parallel to `layers` (from the core reader)
  QStringList categories;

  /// The site of a recorded site index (blk.L for an index it lacks).
  moefy::Site siteOf(int layer) const;
  /// Whether `layer` is a recorded expert site (blk.L.exp.E of a native MoE
  /// recording): its statistics and samples cover only the tokens routed to it.
  bool isExpertSite(int layer) const;
  /// Tokens of the site's stream: `tokens` for single-stack recordings, the
  /// encoder's or the decoder's token count for enc.blk / dec.blk sites.
  int64_t tokensOf(int layer) const;
  /// Tokens the site's statistics count: tokensOf(layer), except at an expert
  /// site blk.L.exp.E of a native MoE recording, the tokens routed to E
  /// (may be 0; its means and shares are then 0).
  int64_t siteTokensOf(int layer) const;
  /// The site's hidden width: dFF, or d_expert / d_shared at the expert and
  /// shared sites of a native MoE recording (every per-neuron array of the
  /// site has this length).
  int widthOf(int layer) const;
  /// How figures name a site: "layer 3" for single-stack sites (as the views
  /// always have), the site name ("dec.blk.1") otherwise; capitalised
  /// ("Layer 3") when `capital`.
  QString siteText(int layer, bool capital = false) const;

  struct LayerStats {
    std::vector<int64_t> count;           // [d_ff]
    std::vector<double> mean;             // [d_ff] sum / tokens of the site's stream
    std::vector<double> max;              // [d_ff]
    std::vector<int64_t> activeHist;      // [d_ff + 1]
    std::vector<int64_t> categoryCount;   // [n_cat * d_ff] row-major
    std::vector<int64_t> categoryTokens;  // [n_cat]
  };
  std::map<int, LayerStats> stats;
  /// Per-layer sparsity summary from the core (analysis/record/sparsity.h).
  std::map<int, moefy::LayerSparsity> sparsity;

  /// The core reader's object (analysis/record/recording.h).
  std::shared_ptr<const moefy::Recording> core() const { return core_; }
  /// Oracle expert mass uses sum of h (plain ReLU FFN) rather than of |h|
  /// (router_scores.h plainReluFfn on the manifest's model block).
  bool plainRelu = true;

  bool hasCoact() const { return hasCoact_; }
  /// Co-activation counts [d_ff * d_ff] row-major for `layer` (cached). Thread-safe.
  std::shared_ptr<const std::vector<int32_t>> coact(int layer) const;

  struct Samples {
    std::vector<int32_t> tokenId;   // [S]
    std::vector<int64_t> docId;     // [S]
    std::vector<int32_t> position;  // [S]
    std::vector<int32_t> category;  // [S]
    int64_t count() const { return static_cast<int64_t>(tokenId.size()); }
  };
  bool hasSamples() const { return hasSamples_; }
  /// The sampled tokens of the first recorded site's stream (the only stream
  /// of a single-stack recording).
  const Samples& samples() const;
  /// The sampled tokens of the stream of site index `layer` (its stack's
  /// reservoir: the rows of sampleAct(layer)); at an expert site blk.L.exp.E
  /// only the sampled tokens routed to E (blk.L.exp.E.routed). samples() for
  /// -1. Thread-safe to call; the reference stays valid while the recording lives.
  const Samples& samples(int layer) const;
  /// Sampled FFN hidden [S * width] and input [S * d_model] of `layer`, the
  /// rows of samples(layer) (float, cached). Thread-safe.
  std::shared_ptr<const std::vector<float>> sampleAct(int layer) const;
  std::shared_ptr<const std::vector<float>> sampleIn(int layer) const;
  /// The reservoir rows (of the core's sample tensors) that samples(layer)
  /// holds: all of the stream's at whole-token sites (empty = all), the
  /// routed ones at an expert site. Thread-safe.
  std::vector<int64_t> sampleRows(int layer) const;

 private:
  std::shared_ptr<const moefy::Recording> core_;
  bool hasCoact_ = false;
  bool hasSamples_ = false;
  mutable std::mutex mu_;
  mutable std::map<int, std::shared_ptr<const std::vector<int32_t>>> coact_;
  mutable std::map<std::string, std::shared_ptr<const std::vector<float>>> sampleCache_;
  mutable std::map<moefy::SiteStack, Samples> samples_;     ///< per stream (its sites' stack)
  std::map<int, int64_t> siteTokens_;                       ///< site index -> tokens of its stream
  std::map<int, int64_t> countedTokens_;                    ///< site index -> tokens its statistics count
  std::map<int, int> width_;                                ///< site index -> hidden width
  const Samples& streamSamples(int layer) const;            ///< the stack reservoir of `layer`'s stream
  mutable std::map<int, Samples> expertSamples_;            ///< expert site index -> its routed sampled tokens
  mutable std::map<int, std::vector<int64_t>> routedRows_;  ///< expert site index -> its rows (sampleRows)
};

/// A partition: labels and perm per layer, metrics from partition.json.
struct Partition {
  static std::shared_ptr<Partition> open(const QString& dir);
  QString dir;
  QString name;
  nlohmann::json meta;
  QString method;
  int seed = 0;
  int experts = 0;
  int dFF = 0;
  QString fingerprint;                         ///< the model's (partition.json model_fingerprint)
  std::map<int, std::vector<int32_t>> labels;  // layer -> [d_ff]
  std::map<int, std::vector<int32_t>> perm;    // layer -> [d_ff]
  std::map<int, moefy::Site> sites;            // site index -> its FFN site (the core reader's site list)
  /// The site of a partitioned site index (blk.L for an index it lacks).
  moefy::Site siteOf(int layer) const {
    auto it = sites.find(layer);
    return it != sites.end() ? it->second : moefy::Site::ofLayer(layer);
  }
  /// Per-layer metric value (NaN if missing).
  double metric(int layer, const std::string& key) const;
  std::vector<double> recallAtK(int layer) const;
  /// Expert sizes of a layer [E].
  std::vector<int> sizes(int layer) const;
  std::shared_ptr<const moefy::Partition> core;  ///< the core reader's object (analysis/split/split.h)
};

/// A router: router.json + its tensors (similarity centroids, MLP weights).
struct Router {
  /// RouterSet::read(dir), then each entry's training and metrics
  /// (RouterSet::siteReport). Throws the reader's errors naming the file; a
  /// malformed training or metrics block does not: the router still routes,
  /// `reports` stays empty and `reportError` holds the one-line error.
  static std::shared_ptr<Router> open(const QString& dir);
  QString dir;
  QString name;
  nlohmann::json meta;
  QString kind;  ///< oracle | similarity | mlp | sigmoid | dynamic-k (moefy::routerKindName)
  int experts = 0;
  std::vector<int> topK;  ///< per layer index (position in `layers`)
  std::vector<int> layers;
  std::vector<moefy::Site> sites;  ///< the site of each entry, parallel to `layers` (RouterSet::siteAt)
  QString partitionPath;  ///< resolved link to its partition ("" if none recorded)
  int dModel = 0;         ///< similarity/mlp: the tensors' d_model (0 for the oracle)
  int topKFor(int layer) const;
  bool hasLayer(int layer) const;
  std::shared_ptr<const moefy::RouterSet> core;  ///< the core reader's object (analysis/route/router.h)

  /// One entry's training and quality figures, copied from the core's
  /// moefy::RouterSiteReport (router.json `training` and `metrics` blocks,
  /// docs/formats.md "Router").
  struct SiteReport {
    /// Mean training loss of each epoch [epochs] (loss `lossName`); empty
    /// when the entry has no training (oracle, similarity).
    std::vector<double> trainLoss;
    /// Held-out loss after each epoch [epochs]; NaN where not measured (--held-out 0).
    std::vector<double> heldOutLoss;
    double massRecall = std::numeric_limits<double>::quiet_NaN();  ///< metrics mass_recall (NaN: absent)
    double overlap = std::numeric_limits<double>::quiet_NaN();     ///< metrics overlap (NaN: absent)
    int64_t samples = 0;                                           ///< samples the metrics were measured on
    double meanK = std::numeric_limits<double>::quiet_NaN();       ///< dynamic-k: experts per token (NaN otherwise)
  };
  /// Per entry, parallel to `layers` (empty when reportError is set).
  std::vector<SiteReport> reports;
  /// The core's one-line error for a malformed training or metrics block ("" when they read).
  QString reportError;
  bool trained = false;  ///< the kind is trained on samples (moefy::routerKindTrained: mlp, sigmoid, dynamic-k)
  QString lossName;      ///< the kind's training loss (moefy::routerLossName; "" when untrained)
  /// The report of site index `layer`; nullptr when the router lacks the
  /// layer or its reports are unreadable.
  const SiteReport* reportFor(int layer) const;
};

/// Load balance of router choices (the Router view's diagnostics): the
/// core's moefy::usageHealth (analysis/analyze/moe_stats.h) of the [S, E]
/// selection matrix of `c.top` (ids outside [0, E), unused slots, skipped).
struct LoadBalance {
  double perplexity = 0;  ///< exp(H) / E of the selection shares, H = -sum p ln p (1 = every expert used equally)
  double deadShare = 0;   ///< share of the E experts no token selected
  int dead = 0;           ///< experts no token selected (deadShare * E)
  int experts = 0;        ///< E
  int tokens = 0;         ///< S
};
/// Throws moefy::ParameterError when `c` has no token or no selection.
LoadBalance routerLoadBalance(const moefy::RouterChoices& c);

/// Router choices (analysis/route/router_scores.h routeSamples) on a
/// recording's sampled tokens at `layer`: the same scores and top-k that
/// `moefy route` and the MoE FFN compute. router == nullptr: the oracle.
/// Throws the core's errors (missing layer, shape mismatch) naming the file.
moefy::RouterChoices routeRecordedSamples(const Recording& rec, const Router* router, const Partition& part, int layer,
                                          int k);

/// eval.json (docs/formats.md "Evaluation") as the core reader
/// (analysis/eval/eval_results.h) returns it: the dense reference and one
/// result per router and active-expert fraction, grouped by router.
struct Evaluation {
  static std::shared_ptr<Evaluation> open(const QString& dir);
  QString dir;
  nlohmann::json meta;
  struct Point {
    double fraction = 0;
    QString topK;  ///< per-layer list as text
    double loss = 0, ppl = 0, lossDelta = 0, top1 = 0, kl = 0;
    double fwdSpeedup = 0, genSpeedup = 0;  ///< median ratio; NaN when the run had no --speed (or an oracle router)
    double fwdSpeedupMin = 0, fwdSpeedupMax = 0;  ///< spread over the timed runs; NaN when not recorded
    double genSpeedupMin = 0, genSpeedupMax = 0;
    int fwdRuns = 0, genRuns = 0;  ///< timed runs behind the figure (0 = not recorded)
    QString speedNote;             ///< why a result has no speed (e.g. oracle router)
    double ffnFlops = 0;           ///< measured FFN FLOPs per token / dense (ffn_flops_fraction); NaN when not recorded
    /// Per site index: relative error of the FFN output against dense
    /// (layer_rel_error); NaN where a site is dense (null); empty when not recorded.
    std::vector<double> layerRelError;
  };
  struct Series {
    QString name;
    std::vector<Point> points;  ///< sorted by fraction
  };
  /// The FFN site name of each index of Point::layerRelError
  /// (moefy::EvalResults::siteNames: "blk.3", "enc.blk.0", "site 2").
  QStringList siteNames;
  double densePpl = 0, denseLoss = 0;
  bool hasSpeed = false, hasGenSpeed = false;
  std::vector<Series> series;
  /// Which data the figures are on (moefy::EvalResults::dataCaption): corpus,
  /// split, sequences, seed. Every figure of the evaluation carries it.
  QString dataCaption;
  QString dataSubtitle;  ///< the same, brief (corpus by name): the plots' subtitle
  /// One line per recording behind the evaluation's routers that read the
  /// evaluation's documents (analysis/project/data_overlap.h
  /// evaluationOverlaps), and per recording that may (not enough recorded to tell).
  QStringList overlaps, possibleOverlaps;
};

/// A quality-versus-FFN-FLOPs front (docs/formats.md "Front") as the core
/// reader (analysis/eval/front.h readFront) returns it, and which data its
/// evaluations read.
struct Front {
  /// readFront(dir). Throws IoError/FormatError naming front.json and the key.
  static std::shared_ptr<Front> open(const QString& dir);
  QString dir;                                     ///< absolute folder of front.json
  QString name;                                    ///< folder name
  std::shared_ptr<const moefy::FrontResult> core;  ///< the validated front.json (methods in the file's order)
  /// Which data every point is on: the caption of the first method's
  /// evaluation (moefy::EvalResults::dataCaption; all of a front's
  /// evaluations read the same held-out sequences), else described from
  /// front.json's heldout_corpus and options (moefy::describeData).
  QString dataCaption;
  QString dataSubtitle;  ///< the same, brief: the plots' subtitle
};

/// A MoE analysis (`moefy analyze`, docs/formats.md "MoE analysis") as the
/// core reader (analysis/analyze/moe_analysis.h readMoeAnalysis) returns it,
/// its per-layer matrices copied to doubles for the Experts view. The
/// neuron matchings (match_perm), the chosen-expert table (chosen) and the
/// layer transitions are not copied (the view does not draw them).
struct Analysis {
  /// readMoeAnalysis(dir), then the tensors of every analysed site. Throws
  /// IoError/FormatError naming the file and key or tensor (a site key that
  /// is not a single-stack site blk.L, a similarity matrix that is not E x E).
  static std::shared_ptr<Analysis> open(const QString& dir);
  /// A tensor of 1 or 2 dimensions as doubles, row-major (a vector has 1 column).
  struct Matrix {
    int rows = 0, cols = 0;
    std::vector<double> values;  ///< [rows * cols]
    bool empty() const { return values.empty(); }
    double at(int r, int c) const { return values[static_cast<size_t>(r) * cols + c]; }
  };
  /// One analysed MoE layer.
  struct Layer {
    moefy::Site site;
    int experts = 0;  ///< E (analysis.json sites[site].experts)
    /// The site's tensors by name without the "blk.L." prefix: "sim.gate",
    /// "mean_sim.up", "match_sim", "match_sim.down", "match_tau", "router_sim",
    /// "pca.experts" [E, 2], "pca.neurons" [E d_expert, 2], "output_sim",
    /// "rank_counts", "usage" [E, 1], "cooccurrence", "channel_usage" [E, 1].
    /// Only those the analysis holds (the dynamic ones need a corpus).
    std::map<std::string, Matrix> matrices;
    std::vector<int> neuronExpert;  ///< pca.neuron_expert: the expert of each row of pca.neurons
    nlohmann::json scalars;         ///< analysis.json sites[site] (dynamic.top1_norm_share, ...)
    /// The named matrix, nullptr when the analysis lacks it.
    const Matrix* matrix(const std::string& name) const;
    /// A number of `scalars` at the path of keys ("dynamic", "usage_perplexity"); NaN when absent or null.
    double scalar(std::initializer_list<const char*> path) const;
  };
  QString dir;  ///< absolute folder of analysis.json
  QString name;
  nlohmann::json meta;             ///< analysis.json
  std::vector<int> layers;         ///< the analysed layers, ascending
  std::vector<moefy::Site> sites;  ///< parallel to layers
  std::map<int, Layer> perLayer;   ///< by layer
  Matrix rankCounts;               ///< "rank_counts": summed over the layers (empty when absent)
  /// analysis.json top1_norm_share over all analysed layers (NaN: weights only)
  double top1NormShare = std::numeric_limits<double>::quiet_NaN();
};

/// The FFN input and hidden activation of one layer for a typed text, run
/// through the workspace model (the Router view's "type a text" mode).
struct TextActivations {
  /// [T] the token of each row (the tokenizer's special tokens included): the
  /// typed text's tokens; for a T5 decoder site, the generated translation's
  /// tokens (row t = the step that emitted token t).
  std::vector<int32_t> ids;
  std::vector<float> in;   ///< [T * d_model] FFN input
  std::vector<float> act;  ///< [T * d_ff] FFN hidden after the activation
  int dModel = 0, dFF = 0;
  bool reluLike = true;  ///< plain ReLU FFN: oracle mass = sum of h (else of |h|), router_scores.h plainReluFfn
  /// Encoder-decoder models: the dense model's greedy translation of the typed
  /// source (special tokens skipped), and whether the rows are decoder steps.
  std::string translation;
  bool decoderRows = false;
};

/// Router choices for a typed text's activations (as routeRecordedSamples).
moefy::RouterChoices routeTypedText(const TextActivations& text, const Router* router, const Partition& part, int layer,
                                    int k);

/// The workspace's model, loaded once and shared by every view and task
/// (StudioContext::sharedModel). get() loads it on first use, on the calling
/// (worker) thread; concurrent callers wait for that one load. The model's
/// forward pass is const and thread-safe, so any number of tasks use it at
/// once. A failed load is not cached (the next get() retries).
class SharedModel {
 public:
  explicit SharedModel(QString dir) : dir_(std::move(dir)) {}
  const QString& dir() const { return dir_; }
  /// The loaded model (loadModel: dense or MoE export). Throws the loader's
  /// errors naming the file. Thread-safe.
  std::shared_ptr<const moefy::LoadedModel> get() const;
  bool loaded() const;
  /// The loaded model's tokenizer, sharing the model's lifetime (loads the
  /// model). Throws the loader's errors, and FormatError naming the folder
  /// when it has no usable tokenizer. Thread-safe.
  std::shared_ptr<const moefy::Tokenizer> tokenizer() const;
  /// Throws ParameterError (moefy::Recording::checkModel's message, naming
  /// both) when `rec` was not recorded with this model; loads the model.
  /// Thread-safe.
  void checkRecording(const Recording& rec) const;
  /// The activation of neuron `neuron` at `site` on document tokens
  /// [begin, end) of `ids` [T], window by window as the recorder cut them
  /// (moefy::neuronActivationsInWindows, analysis/record/sample_context.h, on
  /// the loaded model): [end - begin] floats. Loads the model; throws its
  /// errors and the core function's. Checks job->checkCancel() between
  /// windows. Thread-safe.
  std::vector<float> neuronActivations(const moefy::Site& site, int neuron, const std::vector<int32_t>& ids,
                                       int64_t begin, int64_t end, int seqLen, moefy::JobContext* job) const;

 private:
  QString dir_;
  mutable std::mutex mu_;
  mutable std::shared_ptr<const moefy::LoadedModel> model_;
};

/// A model + tokenizer for probing texts, over the shared model. run() is
/// const and thread-safe, so one probe serves any number of runs.
class TextProbe {
 public:
  /// Loads MODEL_DIR (dense or MoE export). Throws Error subclasses naming the
  /// file; FormatError when the folder has no usable tokenizer.
  static std::shared_ptr<TextProbe> open(const QString& modelDir);
  /// The same over an already shared model (loads it if needed).
  static std::shared_ptr<TextProbe> open(const std::shared_ptr<const SharedModel>& model);
  QString dir;
  int layers = 0;
  /// Tokenises `text` (with the special tokens, as the recorder does) and runs
  /// the model, capturing `site`'s FFN. Single-stack models: one forward pass
  /// of the text (texts longer than the model's context are cut). Encoder-
  /// decoder models (T5): the text is the source; the dense model translates
  /// it greedily (KV cache, at most 128 new tokens, stop at eos), then one
  /// teacher-forced pass of the source and decoder_start + the translation
  /// gives the site's activations: an enc.blk site has a row per source
  /// token, a dec.blk site a row per generated token (the decoder step that
  /// emitted it). Throws ParameterError for an empty text, a site the model
  /// does not have, or a native expert site.
  TextActivations run(const QString& text, const moefy::Site& site) const;
  /// run(text, the single-stack site of `layer`).
  TextActivations run(const QString& text, int layer) const;
  ~TextProbe();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Model summary read from config.json and the safetensors headers (no weights
/// loaded; analysis/checkpoint/loader.h describeModelFiles): what the Model view
/// shows before/without loading the engine.
struct ModelSummary {
  static ModelSummary read(const QString& dir);
  nlohmann::json info;  ///< the same keys as `moefy inspect --json`
};

}  // namespace moefy::views
