#pragma once
// Plain-data readers for the pipeline's artefacts (docs/formats.md) and the
// workspace file (docs/studio.md). Only artefacts.cpp touches tensors, so the
// widgets compile without libtorch headers. Every loader throws moefy::Error
// subclasses whose message names the file and tensor.
#include <QString>
#include <QStringList>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

namespace moefy::views {

/// workspace.json: a folder holding the model/corpus references, settings and
/// one sub-folder per artefact kind.
struct Workspace {
  QString dir;         ///< absolute folder of workspace.json
  QString name;
  QString modelPath;   ///< as stored (relative to dir or absolute)
  QString corpusPath;
  nlohmann::json settings = nlohmann::json::object();
  std::map<std::string, QString> folders;  ///< kind -> sub-folder ("recordings", ...)

  static const QStringList& kinds();  ///< recordings, partitions, routers, evaluations, exports, figures
  QString resolve(const QString& path) const;  ///< relative paths resolved against dir
  QString model() const { return resolve(modelPath); }
  QString corpus() const { return resolve(corpusPath); }
  QString folder(const std::string& kind) const;

  /// Reads DIR/workspace.json. Throws FormatError/IoError naming the file.
  static Workspace load(const QString& dir);
  /// A new workspace description (not yet written).
  static Workspace create(const QString& dir, const QString& name, const QString& model, const QString& corpus);
  /// Writes workspace.json atomically and creates the artefact folders.
  void save() const;
  nlohmann::json toJson() const;
};

/// One artefact folder found in a workspace.
struct ArtefactRef {
  QString kind;   ///< "recording", "partition", "router", "evaluation", "export"
  QString path;   ///< folder
  QString name;   ///< folder name
  QString summary;  ///< one line for the tree's tooltip
};
/// Scans the workspace's folders (one level deep) for artefacts, sorted by name.
std::vector<ArtefactRef> scanArtefacts(const Workspace& ws);

/// A recording (manifest + stats; coact and samples read lazily per layer).
class Recording {
 public:
  static std::shared_ptr<Recording> open(const QString& dir);

  QString dir;
  nlohmann::json manifest;
  int64_t tokens = 0;
  int dFF = 0;
  int dModel = 0;
  std::vector<int> layers;  ///< recorded layer indices
  QStringList categories;

  struct LayerStats {
    std::vector<int64_t> count;       // [d_ff]
    std::vector<double> mean;         // [d_ff] sum / tokens
    std::vector<double> max;          // [d_ff]
    std::vector<int64_t> activeHist;  // [d_ff + 1]
    std::vector<int64_t> categoryCount;   // [n_cat * d_ff] row-major
    std::vector<int64_t> categoryTokens;  // [n_cat]
  };
  std::map<int, LayerStats> stats;

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
  const Samples& samples() const;
  /// Sampled FFN hidden [S * d_ff] and input [S * d_model] of `layer` (float, cached). Thread-safe.
  std::shared_ptr<const std::vector<float>> sampleAct(int layer) const;
  std::shared_ptr<const std::vector<float>> sampleIn(int layer) const;

 private:
  bool hasCoact_ = false;
  bool hasSamples_ = false;
  mutable std::mutex mu_;
  mutable std::map<int, std::shared_ptr<const std::vector<int32_t>>> coact_;
  mutable std::map<std::string, std::shared_ptr<const std::vector<float>>> sampleCache_;
  mutable std::optional<Samples> samples_;
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
  std::map<int, std::vector<int32_t>> labels;  // layer -> [d_ff]
  std::map<int, std::vector<int32_t>> perm;    // layer -> [d_ff]
  /// Per-layer metric value (NaN if missing).
  double metric(int layer, const std::string& key) const;
  std::vector<double> recallAtK(int layer) const;
  /// Expert sizes of a layer [E].
  std::vector<int> sizes(int layer) const;
};

/// A router: router.json + its tensors (similarity centroids, MLP weights).
struct Router {
  static std::shared_ptr<Router> open(const QString& dir);
  QString dir;
  QString name;
  nlohmann::json meta;
  QString kind;  ///< oracle | similarity | mlp
  int experts = 0;
  std::vector<int> topK;  ///< per layer index (position in `layers`)
  std::vector<int> layers;
  QString partitionPath;
  std::map<int, std::vector<float>> centroids;  // layer -> [E * d_model]
  std::map<int, std::vector<float>> w1;         // layer -> [E * d_model]
  std::map<int, std::vector<float>> w2;         // layer -> [E * E]
  int dModel = 0;
  int topKFor(int layer) const;
};

/// eval.json (docs/formats.md "Evaluation"): the dense reference and one
/// result per router and active-expert fraction, grouped here by router.
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
  };
  struct Series {
    QString name;
    std::vector<Point> points;  ///< sorted by fraction
  };
  double densePpl = 0, denseLoss = 0;
  bool hasSpeed = false, hasGenSpeed = false;
  std::vector<Series> series;
};

/// The FFN input and hidden activation of one layer for a typed text, run
/// through the workspace model (the Router view's "type a text" mode).
struct TextActivations {
  std::vector<int32_t> ids;  ///< [T] token ids (the tokenizer's special tokens included)
  std::vector<float> in;     ///< [T * d_model] FFN input
  std::vector<float> act;    ///< [T * d_ff] FFN hidden after the activation
  int dModel = 0, dFF = 0;
  bool reluLike = true;      ///< ReLU model: oracle mass = sum of h (else of |h|)
};

/// A loaded model + tokenizer for probing texts. forward() is const and
/// thread-safe, so one probe serves any number of runs.
class TextProbe {
 public:
  /// Loads MODEL_DIR (dense or MoE export). Throws Error subclasses naming the
  /// file; FormatError when the folder has no usable tokenizer.
  static std::shared_ptr<TextProbe> open(const QString& modelDir);
  QString dir;
  int layers = 0;
  /// Tokenises `text` (with the special tokens, as the recorder does) and runs
  /// the model, capturing `layer`. Throws ParameterError for an empty text or
  /// a layer out of range; texts longer than the model's context are cut.
  TextActivations run(const QString& text, int layer) const;
  ~TextProbe();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Model summary read from config.json and the safetensors headers (no weights
/// loaded): what the Model view shows before/without loading the engine.
struct ModelSummary {
  static ModelSummary read(const QString& dir);
  nlohmann::json info;  ///< the same keys as `moefy inspect --json`
};

}  // namespace moefy::views
