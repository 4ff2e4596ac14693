#pragma once
// Language-model training with libtorch autograd on the engine's Model.
//
// Encoder-decoder models (T5, feed_forward_proj relu or gated) train on a
// parallel corpus with teacher forcing (train_data.h Seq2SeqData: the target
// shifted right from decoder_start_token_id, cross-entropy over the target
// tokens, padding ignored), initialised as HF's T5PreTrainedModel does; the
// rest (optimiser, schedule, checkpoints, resume, cancel, the final
// per-site activation sparsity) is shared with the causal models below.
//
// The model is built from an HF config.json (any architecture in arch.h; the
// shipped one is GPT-2 with activation_function "relu"), initialised GPT-2
// style (normal(0, 0.02), residual output projections scaled by
// 1/sqrt(2 n_layer), norms 1, biases 0) and trained on next-token prediction
// over random windows of the tokenised corpus (documents concatenated, each
// starting with the tokenizer's BOS). Optimiser: AdamW (decoupled weight decay
// on matrices only), linear warmup then cosine decay to min_lr, global-norm
// gradient clipping. Deterministic in the seed: batch s is drawn from an RNG
// seeded with (seed, s), so a resumed run sees the same batches.
//
// Native MoE models (Mixtral, Qwen2-MoE, OLMoE: router + top-k + experts)
// train through the same routed forward pass as inference (the routing is
// differentiable where HF's is: the gradient reaches the router through the
// chosen experts' softmax weights). The objective adds to the next-token
// cross-entropy aux_loss_coef x the load-balancing loss and z_loss_coef x
// the router z-loss (router_loss.h), both over the router logits of all MoE
// layers of the step. Experts and the router are initialised like the other
// matrices (normal(0, 0.02); expert down projections are residual outputs).
//
// A run works in MODEL_DIR.partial and, when it completes, replaces
// MODEL_DIR with it in one atomic exchange (fsutil.h replaceFolder): a failed
// or cancelled run, with or without --force, leaves MODEL_DIR as it was, and
// MODEL_DIR.partial only when it holds a checkpoint to --resume from. --force
// replaces only a model trained by this command (config.json and
// training.json), never another folder or an input.
//
// MODEL_DIR layout (and MODEL_DIR.partial's while training):
//   config.json, model.safetensors      the final model (written at the end)
//   tokenizer.json                      copied from --tokenizer
//   training.json                       the run's summary (written at the end)
//   training_log.jsonl                  one JSON object per log/eval line (MoE models:
//                                       train lines add aux_loss and z_loss, unscaled window means)
//   checkpoint/{model,optimizer}.safetensors, checkpoint/state.json
//                                       the latest checkpoint (atomic folder), for --resume
#include <c10/core/Device.h>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moefy {

class JobContext;

struct TrainOptions {
  /// Where the model, its gradients and the AdamW moments live (--device);
  /// batches are drawn on the host and moved there, checkpoints and the
  /// final model are written from it. The run is the same on every device up
  /// to float rounding.
  c10::Device device = c10::Device(c10::kCPU);
  std::filesystem::path corpus;  ///< .txt file or folder of .txt documents
  std::filesystem::path
      heldout;  ///< held-out corpus; empty = every 20th document of `corpus` (the last one if fewer than 20)
  std::filesystem::path config;     ///< HF config.json of the model to train
  std::filesystem::path tokenizer;  ///< tokenizer.json
  std::filesystem::path outDir;
  int64_t steps = 1000;
  uint64_t seed = 0;
  int batch = 16;
  int seqLen = 128;   ///< causal: window length; encoder-decoder: the most source tokens (with </s>)
  int targetLen = 0;  ///< encoder-decoder: the most target tokens (with </s>); 0 = seqLen
  double lr = 1e-3;
  double minLrRatio = 0.1;  ///< cosine decays to lr * minLrRatio
  int64_t warmup = -1;      ///< -1: 5% of steps (at least 1)
  double weightDecay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;  ///< global gradient norm; 0 = off
  int64_t logEvery = 10;
  int64_t evalEvery = 100;        ///< 0 = only at the end
  int64_t evalTokens = 16384;     ///< held-out tokens per periodic eval (the final eval uses all)
  int64_t checkpointEvery = 200;  ///< 0 = no checkpoints
  bool resume = false;
  bool force = false;         ///< replace an existing trained model at outDir
  std::string dtype = "F32";  ///< dtype of the final model.safetensors
  /// Native MoE models: coefficient of the load-balancing loss; unset = the
  /// config's router_aux_loss_coef (HF defaults when absent: Mixtral and
  /// Qwen2-MoE 0.001, OLMoE 0.01). Must be >= 0; refused for dense models.
  std::optional<double> auxLossCoef;
  /// Native MoE models: coefficient of the router z-loss; unset = 0. Must be
  /// >= 0; refused for dense models.
  std::optional<double> zLossCoef;
};

/// Expert usage of one native MoE layer over the held-out tokens (the metrics
/// of moe_stats.h usageHealth, on the router's top-k selections).
struct ExpertUsage {
  int layer = 0;
  std::vector<double> share;  ///< [E] selection share, sums to 1
  double perplexity = 0;      ///< exp(H) / E of the shares; 1 = perfectly even
  double deadShare = 0;       ///< share of the experts no held-out token selected
};

struct TrainResult {
  int64_t steps = 0;       ///< steps done in total (including resumed ones)
  double firstLoss = 0;    ///< training loss of the first step of this run
  double finalLoss = 0;    ///< mean training loss over the last log window
  double heldoutLoss = 0;  ///< final held-out loss (nats/token) over all held-out windows
  double heldoutPerplexity = 0;
  int64_t heldoutTokens = 0;
  std::vector<double> activeFraction;    ///< per dense FFN site: share of hidden units > 0 over the held-out
                                         ///< tokens, padding left out (empty for native MoE models)
  std::vector<std::string> activeSites;  ///< the sites of activeFraction ("blk.0", or "enc.blk.0" .. "dec.blk.N")
  // Native MoE models only (0 / empty otherwise):
  double auxLossCoef = 0, zLossCoef = 0;  ///< the coefficients used
  double finalAuxLoss = 0;                ///< mean load-balancing loss (unscaled) over the last log window
  double finalZLoss = 0;                  ///< mean router z-loss (unscaled) over the last log window
  std::vector<ExpertUsage> expertUsage;   ///< per MoE layer, over all held-out tokens
  int64_t trainTokens = 0;                ///< tokens in the training stream
  int64_t parameters = 0;
  double seconds = 0;          ///< wall time of this run
  double tokensPerSecond = 0;  ///< training tokens processed per second in this run
};

/// Trains and writes MODEL_DIR. Throws ParameterError/FormatError/IoError naming
/// the option or file (ParameterError for a negative --aux-loss-coef or
/// --z-loss-coef, or either given for a dense model); CancelledError on cancel
/// (the last checkpoint stays).
TrainResult trainLanguageModel(const TrainOptions& options, JobContext& job);

}  // namespace moefy
