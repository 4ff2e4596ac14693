#pragma once
// Recording: read access to a recording folder (docs/formats.md "Recording").
// open() validates the manifest and the presence and shape of every tensor it
// promises, so later accessors cannot fail on a malformed folder.
#include <ATen/Tensor.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/record/recorder.h"

namespace moefy {

class Model;
class SafetensorsFile;

class Recording {
 public:
  /// Opens and validates REC_DIR. Checkpoint folders (manifest "complete":
  /// false) are refused unless allowPartial. Throws FormatError/IoError naming
  /// the file and key or tensor.
  static Recording open(const std::filesystem::path& dir, bool allowPartial = false);

  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& manifest() const { return manifest_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& modelPath() const { return modelPath_; }
  int dFF() const { return dFF_; }
  int dModel() const { return dModel_; }
  int modelLayers() const { return modelLayers_; }
  const std::vector<int>& layers() const { return layers_; }
  bool hasLayer(int layer) const;
  int64_t tokens() const { return tokens_; }
  int64_t sequences() const { return sequences_; }
  int64_t chunksDone() const { return chunksDone_; }
  bool complete() const { return complete_; }
  const std::vector<std::string>& categories() const { return categories_; }
  ActiveRule activeRule() const { return active_; }
  bool hasSoftCoact() const { return soft_; }

  // Statistics of one recorded layer (throws ParameterError for other layers).
  at::Tensor count(int layer) const;          ///< I64 [d_ff]
  at::Tensor sum(int layer) const;            ///< F64 [d_ff]
  at::Tensor sumsq(int layer) const;          ///< F64 [d_ff]
  at::Tensor max(int layer) const;            ///< F32 [d_ff]
  at::Tensor activeHist(int layer) const;     ///< I64 [d_ff + 1]
  at::Tensor categoryCount(int layer) const;  ///< I64 [n_categories, d_ff]
  at::Tensor categoryTokens(int layer) const; ///< I64 [n_categories]
  at::Tensor coact(int layer) const;          ///< I32 [d_ff, d_ff] (zero-copy view)
  at::Tensor coactSoft(int layer) const;      ///< F32 [d_ff, d_ff], undefined if not recorded

  // Reservoir samples (the same S tokens for every layer).
  int64_t sampleCount() const { return samples_; }
  at::Tensor sampleTokenIds() const;    ///< I32 [S]
  at::Tensor sampleDocIds() const;      ///< I64 [S]
  at::Tensor samplePositions() const;   ///< I32 [S]
  at::Tensor sampleCategories() const;  ///< I32 [S]
  at::Tensor sampleFfnIn(int layer) const;   ///< F16 [S, d_model]
  at::Tensor sampleFfnAct(int layer) const;  ///< F16 [S, d_ff]

  /// Throws ParameterError (CLI exit 2) if `model` is not the model this recording was made
  /// with (fingerprint or shape mismatch), naming both.
  void checkModel(const Model& model) const;

 private:
  std::filesystem::path dir_;
  nlohmann::json manifest_;
  std::string fingerprint_, modelPath_;
  int dFF_ = 0, dModel_ = 0, modelLayers_ = 0;
  std::vector<int> layers_;
  int64_t tokens_ = 0, sequences_ = 0, chunksDone_ = 0, samples_ = 0;
  bool complete_ = true, soft_ = false;
  std::vector<std::string> categories_;
  ActiveRule active_;
  std::shared_ptr<SafetensorsFile> stats_, coact_, sampleFile_;
  void requireLayer(int layer) const;
};

}  // namespace moefy
