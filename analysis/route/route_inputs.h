#pragma once
// Readers of the artefacts the routing step consumes: partitions
// (partition.json + labels.safetensors) and recorded samples
// (manifest.json + samples.safetensors), as docs/formats.md specifies.
#include <ATen/Tensor.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/site.h"

namespace moefy {

class Model;
struct ModelConfig;

struct PartitionData {
  std::filesystem::path dir;
  int experts = 0;                 ///< E (same for every layer)
  std::vector<int> layers;         ///< partitioned site indices, ascending (analysis/model/site.h)
  std::vector<Site> sites;         ///< the site of each entry of `layers`
  std::vector<at::Tensor> labels;  ///< per entry of `layers`: [d_ff] int32 (E: the shared expert's neurons)
  std::vector<int> shared;         ///< per entry: neurons of the site's shared expert, 0 = none
  std::string modelFingerprint;
  std::string labelsHash;          ///< 16 hex digits over all labels (routers record it)
  nlohmann::json meta;             ///< partition.json

  int indexOfLayer(int layer) const;  ///< -1 if absent
  /// Reads and validates a partition folder. Throws FormatError/IoError naming the file.
  static PartitionData read(const std::filesystem::path& dir);
  /// Throws ParameterError if the partition was made for another model
  /// (fingerprint differs, a site the model lacks (ModelConfig::siteIndex,
  /// expert sites of native MoE layers included), a label count other than
  /// the site's width).
  void checkModel(const Model& model) const;
};

/// A stable 16-hex-digit hash of label tensors.
std::string hashLabels(const std::vector<at::Tensor>& labels);

struct SampleData {
  std::filesystem::path dir;
  int64_t samples = 0;  ///< S of the first site (encoder-decoder stacks may differ: ffnIn[i].size(0))
  std::string modelFingerprint;
  nlohmann::json manifest;
  /// Per requested layer (order of read()'s `layers`): F32 tensors.
  std::vector<at::Tensor> ffnIn;    ///< [S, d_model]
  std::vector<at::Tensor> ffnAct;   ///< [S, width of the site] (d_ff; d_expert at expert sites)

  /// Reads the samples of whole-FFN `sites` (all of width dFF) from a
  /// recording folder (tensors "<site>.ffn_in" / "<site>.ffn_act"). Throws
  /// FormatError naming the file and tensor (missing site, wrong shape, S
  /// mismatch among the sites of one stack; the encoder's and decoder's
  /// reservoirs may differ in size), ParameterError for an expert site (use
  /// the ModelConfig form).
  static SampleData read(const std::filesystem::path& dir, const std::vector<Site>& sites, int64_t dModel, int64_t dFF);
  /// The same for any recorded sites of `config`'s model, each at its own
  /// width (ModelConfig::siteWidth). The expert sites blk.L.exp.E of a native
  /// MoE recording get the sampled tokens routed to expert E only: ffnIn their
  /// rows of the layer's input blk.L.ffn_in, ffnAct their rows of
  /// blk.L.exp.E.ffn_act (the rows blk.L.exp.E.routed marks), so their S is
  /// their own; the shared site blk.L.shared gets every sampled token.
  /// Throws as above, and FormatError when no sampled token reached an expert.
  static SampleData read(const std::filesystem::path& dir, const std::vector<Site>& sites, const ModelConfig& config);
  void checkModel(const Model& model) const;

 private:
  static SampleData readSites(const std::filesystem::path& dir, const std::vector<Site>& sites, int64_t dModel,
                              const std::vector<int64_t>& widths);
};

}  // namespace moefy
