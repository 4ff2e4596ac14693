#pragma once
// ModelConfig: the architecture-independent description of a checkpoint,
// parsed from a Hugging Face config.json by the architecture's adapter.
//
// Every config.json key that the HF modeling code of a model_type reads is
// listed in that model_type's key table (configKeys()): it is either
// implemented, refused by name when it does not hold its neutral value, or
// documented as ignored because it cannot change inference results (dropout,
// initialisation, cache and attention-kernel choices, token ids). Values are
// checked against their valid ranges; errors are one line naming the file and
// the key (FormatError).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/site.h"

namespace moefy {

// clang-format off
enum class Arch { GPT2, Llama, Mistral, Qwen2, OPT, Bert, Qwen3, Gemma, Gemma2, Gemma3, Phi3, Olmo2, T5,
                  Mixtral, Qwen2Moe, Olmoe };
// clang-format on
enum class Activation { ReLU, GELU, GELUTanh, SiLU };
enum class NormKind { LayerNorm, RMSNorm };
/// Learned: absolute position table; Rope: rotary; Relative: T5's bucketed
/// relative position bias added to the attention scores.
enum class PosKind { Learned, Rope, Relative };
/// Where a block's norms sit around its two sub-layers f (attention, FFN):
///  Pre:      x + f(norm(x))                 (GPT-2, LLaMA, ...)
///  Post:     norm(x + f(x))                 (BERT, OPT-350m)
///  Sandwich: x + postnorm(f(prenorm(x)))    (Gemma 2/3)
///  Output:   x + norm(f(x))                 (OLMo 2)
enum class NormPlacement { Pre, Post, Sandwich, Output };
/// q/k normalisation before RoPE: none, RMSNorm over each head's head_dim
/// (Qwen3, Gemma3), or RMSNorm over the whole projection (OLMo 2).
enum class QkNorm { None, PerHead, Full };

const char* archName(Arch a);
const char* activationName(Activation a);
const char* normPlacementName(NormPlacement p);
/// Parses an HF activation name (relu, gelu, gelu_new, gelu_pytorch_tanh, silu, swish).
Activation activationFromName(const std::string& name, const std::string& context);

/// RoPE frequencies (HF modeling_rope_utils semantics). type is one of
/// "default", "linear", "dynamic", "llama3", "yarn".
struct RopeConfig {
  std::string type = "default";
  double theta = 10000.0;
  int dim = 0;                   ///< rotated dims per head: int(head_dim * partial_rotary_factor), even
  double factor = 1.0;           ///< linear/dynamic/llama3/yarn
  int maxPos = 0;                ///< dynamic: max_position_embeddings
  int originalMaxPos = 0;        ///< llama3 / yarn: original_max_position_embeddings
  double lowFreqFactor = 1.0;    ///< llama3
  double highFreqFactor = 4.0;   ///< llama3
  double betaFast = 32.0;        ///< yarn
  double betaSlow = 1.0;         ///< yarn
  bool truncate = true;          ///< yarn: floor/ceil the correction range
  double attentionFactor = 1.0;  ///< cos/sin multiplier (yarn); 1 otherwise
};

struct ModelConfig {
  Arch arch = Arch::GPT2;
  std::string modelType;  ///< config.json "model_type"
  int nLayer = 0;         ///< layers of the single stack; the encoder's for encoder-decoder models
  int dModel = 0;         ///< hidden size, C
  int nHead = 0;
  int nKVHead = 0;  ///< < nHead for GQA
  int headDim = 0;
  int dFF = 0;  ///< FFN hidden width
  int vocab = 0;
  int maxPos = 0;
  int posOffset = 0;     ///< OPT's learned positions start at 2
  int typeVocab = 0;     ///< BERT token types
  int embedProjDim = 0;  ///< OPT word_embed_proj_dim (== dModel when no projection)
  Activation act = Activation::ReLU;
  bool gated = false;  ///< act(gate) * up (LLaMA family)
  NormKind norm = NormKind::LayerNorm;
  double normEps = 1e-5;
  bool normPlusOne = false;  ///< Gemma: RMSNorm weight applied as (1 + w)
  NormPlacement placement = NormPlacement::Pre;
  bool preNorm = true;    ///< placement == Pre (kept for callers that only know pre/post)
  bool finalNorm = true;  ///< norm after the last block (pre-norm models)
  QkNorm qkNorm = QkNorm::None;
  PosKind pos = PosKind::Learned;
  double ropeTheta = 10000.0;      ///< == rope.theta
  RopeConfig rope;                 ///< global (full-attention) layers
  RopeConfig ropeLocal;            ///< sliding-window layers (Gemma3's rope_local_base_freq); == rope elsewhere
  int slidingWindow = 0;           ///< a query sees keys with q - k < window on sliding layers; 0 = unlimited
  std::vector<bool> layerSliding;  ///< per layer: uses the sliding window (empty = every layer when slidingWindow > 0)
  double attnScale = 0;            ///< multiplier of q.k; 0 = 1/sqrt(head_dim)
  bool attnScaleInverseLayer = false;  ///< GPT-2 scale_attn_by_inverse_layer_idx: scores / (layer + 1)
  double attnSoftcap = 0;              ///< Gemma2: scores = cap * tanh(scores / cap); 0 = off
  double finalSoftcap = 0;             ///< Gemma2: logits = cap * tanh(logits / cap); 0 = off
  bool embedScale = false;             ///< Gemma: embeddings multiplied by sqrt(d_model)
  bool attnBias = false;               ///< q/k/v biases
  bool attnOutBias = false;
  bool ffnBias = false;
  bool causal = true;
  bool tiedEmbeddings = true;
  // Encoder-decoder models (T5). nLayer counts the encoder's blocks.
  bool encoderDecoder = false;
  int nDecoderLayer = 0;   ///< decoder blocks (T5 num_decoder_layers); 0 for single-stack models
  int relBuckets = 0;      ///< PosKind::Relative: relative_attention_num_buckets
  int relMaxDistance = 0;  ///< PosKind::Relative: relative_attention_max_distance
  int decoderStartId = 0;  ///< decoder_start_token_id: the first decoder input of generation
  double headScale = 1.0;  ///< multiplier of the final hidden states before the LM head (T5 tied: d_model^-0.5)
  // Native MoE models (Mixtral, Qwen2-MoE, OLMoE): a MoE block replaces the
  // FFN of the layers in layerMoe. Per token the router's logits [E] go
  // through a float32 softmax, the k largest probabilities pick the experts
  // (renormalised to sum 1 when normTopK), and the output is the weighted sum
  // of the chosen experts' gated FFNs (act(gate x) * up x, then down), plus
  // sigmoid(shared_expert_gate . x) times the shared expert's FFN where
  // dShared > 0. expertCount == 0 means every FFN is dense.
  int expertCount = 0;  ///< E: routed experts per MoE layer (num_local_experts / num_experts)
  int expertTopK = 0;   ///< k: experts per token (num_experts_per_tok), 1 <= k <= E
  int dExpert =
      0;  ///< hidden width of each routed expert (Mixtral/OLMoE intermediate_size, Qwen2-MoE moe_intermediate_size)
  bool normTopK = false;  ///< the k chosen probabilities are divided by their sum (Mixtral always; norm_topk_prob)
  int dShared = 0;        ///< hidden width of the shared expert (Qwen2-MoE), 0 = none
  std::vector<bool>
      layerMoe;        ///< per layer: MoE block (true) or dense MLP of width dFF (false); empty for dense models
  nlohmann::json raw;  ///< the full config.json, kept for export

  std::string ffnKind() const { return gated ? "gated" : "plain"; }
  /// Whether layer L is a native MoE block (its FFN sites are blk.L.exp.E and blk.L.shared).
  bool moeLayer(int layer) const {
    return expertCount > 0 && layer >= 0 && layer < static_cast<int>(layerMoe.size()) && layerMoe[layer];
  }
  /// e.g. "8 experts x 96, top-2 renormalised, shared expert 64 (sigmoid gate); layers MDM (M MoE, D dense 128)";
  /// "none" for dense models.
  std::string moeSummary() const;
  /// Blocks of a stack: nLayer for Single and Encoder, nDecoderLayer for Decoder.
  int layerCount(SiteStack stack) const { return stack == SiteStack::Decoder ? nDecoderLayer : nLayer; }
  /// The model's stacks in forward order: {Single} for single-stack models,
  /// {Encoder, Decoder} for encoder-decoder ones (layerCount gives their blocks).
  std::vector<SiteStack> stacks() const {
    if (encoderDecoder) return {SiteStack::Encoder, SiteStack::Decoder};
    return {SiteStack::Single};
  }
  /// The stacks and their FFN sites in one line, e.g. "single: 4 layers, blk.0-3" or
  /// "encoder: 2 layers, enc.blk.0-1; decoder: 3 layers, dec.blk.0-2".
  std::string stackSummary() const;
  /// Native MoE models: which layers are MoE blocks and which dense MLPs, with
  /// their sites, e.g. "MoE blk.0, blk.2 (sites blk.L.exp.0-7, blk.L.shared);
  /// dense blk.1 (d_ff 128)"; "none" for models without native experts.
  std::string moeLayerSummary() const;
  /// The expert sites of native MoE layer `layer` in order: blk.L.exp.0 ..
  /// blk.L.exp.{E-1}, then blk.L.shared when the model has a shared expert
  /// (dShared > 0). Empty for a dense layer, a layer out of range or a dense
  /// model. Thread-safe.
  std::vector<Site> expertSites(int layer) const;
  /// Every FFN site of the model in forward order: blk.L for single-stack
  /// models, enc.blk.L then dec.blk.L for encoder-decoder models.
  std::vector<Site> ffnSites() const;
  /// The index of a whole-FFN site in ffnSites() (analysis/model/site.h "Site
  /// indices"), or -1 when the model has no such site. Thread-safe.
  int ffnSiteIndex(const Site& site) const;
  /// The site index of any recordable FFN site (analysis/model/site.h "Site
  /// indices" and "Expert site indices"): ffnSiteIndex() for whole-FFN sites
  /// (not the blk.L of a MoE layer), expertSiteIndexOf() for the expert sites
  /// blk.L.exp.E and the shared site blk.L.shared (when dShared > 0) of MoE
  /// layers; -1 when the model has no such site. Thread-safe.
  int siteIndex(const Site& site) const;
  /// Every site with a site index, in index order: the dense FFN sites (every
  /// ffnSites() entry except the blk.L of MoE layers), then the expert sites
  /// blk.L.exp.E (layer by layer), then the shared sites. == ffnSites() for
  /// dense and encoder-decoder models. Thread-safe.
  std::vector<Site> indexedSites() const;
  /// The hidden width of a site's FFN: dExpert for blk.L.exp.E, dShared for
  /// blk.L.shared, dFF for whole-FFN sites.
  int siteWidth(const Site& site) const { return site.shared ? dShared : site.expert >= 0 ? dExpert : dFF; }
  /// Whether layer L attends through the sliding window.
  bool sliding(int layer) const {
    if (slidingWindow <= 0) return false;
    return layerSliding.empty() || layerSliding[static_cast<size_t>(layer)];
  }
  /// e.g. "all 4096", "local 4096 / global, alternating (L%2==0 local)", "none".
  std::string windowPattern() const;
  /// e.g. "rmsnorm (1 + w), pre+post-norm, q/k norm per head".
  std::string normSummary() const;
  /// e.g. "llama3 (theta 500000, factor 8, ...), 64 of 64 dims"; "learned, 1024" for learned positions.
  std::string ropeSummary() const;
  /// Attention extras: scale and soft-capping, e.g. "scale 1/sqrt(256), softcap 50, logits softcap 30".
  std::string attentionSummary() const;
  /// Every parsed field as one line (for tests that a key changes the model).
  std::string describe() const;
  /// Parses config.json of `dir`. Throws FormatError naming config.json and the key.
  static ModelConfig fromFile(const std::filesystem::path& configJson);
  static ModelConfig fromJson(const nlohmann::json& j, const std::string& context);
};

/// How the engine treats a config.json key that the HF modeling code reads.
enum class KeyUse {
  Implemented,  ///< read and honoured
  Refused,      ///< refused by name unless it holds its neutral value
  Ignored,      ///< cannot change inference results (dropout, init, cache, kernels, token ids)
};

struct ConfigKey {
  const char* name;
  KeyUse use;
  const char* neutral;  ///< JSON text of the neutral value (Refused), "" otherwise
  const char* probe;    ///< JSON text of a valid non-neutral value (for the per-key tests); "" = none
  const char* bad;      ///< JSON text of an out-of-range value that must be refused; "" = none
  const char* note;     ///< what the key does / why it is ignored
};

/// The key table of one model_type (throws FormatError for unknown types).
const std::vector<ConfigKey>& configKeys(const std::string& modelType);
/// The model_types the engine supports, in a stable order.
const std::vector<std::string>& supportedModelTypes();

}  // namespace moefy
