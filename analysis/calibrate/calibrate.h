#pragma once
// Calibration of a MoEfied model (MoEfication's "parameter calibration"):
// fine-tune the routers, and optionally the experts, with libtorch autograd on
// token sequences.
//
//  - Router loss: BCE-with-logits between the router's logits
//    (LayerRouter::logits: mlp its output; sigmoid x W1^T, before the sigmoid;
//    similarity the cosine scores) and the oracle target (per-expert
//    activation mass / its maximum) at the FFN inputs the MoE model really
//    sees, summed over MoE layers.
//  - With experts: plus the LM loss (next-token, or masked-LM for BERT) of
//    the MoE model itself, through the selected experts (the top-k choice is
//    not differentiable; unselected experts get no gradient).
//  - Adam; only router (and expert) tensors change.
#include <c10/core/Device.h>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "analysis/text/corpus.h"

namespace moefy {

class JobContext;
class Model;

struct CalibrateOptions {
  /// The device the export is loaded on and trained there (--device,
  /// runCalibration); the written export is the same on every device.
  c10::Device device = c10::Device(c10::kCPU);
  int steps = 100;
  bool experts = false;
  double lr = 1e-3;
  int batch = 4;            ///< sequences per step
  uint64_t seed = 0;
  int64_t maskTokenId = -1; ///< BERT
};

struct CalibrateResult {
  double lmLossBefore = 0, lmLossAfter = 0;          ///< on the held-out sequences
  double routerLossBefore = 0, routerLossAfter = 0;  ///< on the held-out sequences
  std::vector<double> trainLoss;                     ///< per step
  nlohmann::json toJson() const;
};

/// `model` must carry a MoeFfn override (a loaded MoE export). On return the
/// model is trainable and its override holds the calibrated MoE.
CalibrateResult calibrateMoe(Model& model, const std::vector<std::vector<int64_t>>& train,
                             const std::vector<std::vector<int64_t>>& heldOut, const CalibrateOptions& options,
                             JobContext& job);

/// What `moefy calibrate` and the studio's Calibrate step do: loads the MoE
/// export `moeDir` (ParameterError if it is not one), reads up to `tokens`
/// tokens of `corpus` in windows of `seqLen` (readSequences, `split`), holds
/// out every tenth sequence for the before/after figures, runs calibrateMoe,
/// and writes `out` atomically as a MoE export whose moefication block gains
/// a "calibration" object (steps, experts, lr, corpus, losses before/after).
/// `options.maskTokenId` is taken from the model's tokenizer. Refuses an
/// existing `out` unless `force`. Returns CalibrateResult::toJson() plus "out".
nlohmann::json runCalibration(const std::filesystem::path& moeDir, const std::filesystem::path& corpus,
                              CalibrateOptions options, int seqLen, int64_t tokens, Split split,
                              const std::filesystem::path& out, bool force, JobContext& job);

}  // namespace moefy
