#include "analysis/model/config.h"

#include <cmath>
#include <map>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"

namespace moefy {

const char* archName(Arch a) {
  switch (a) {
    case Arch::GPT2:
      return "gpt2";
    case Arch::Llama:
      return "llama";
    case Arch::Mistral:
      return "mistral";
    case Arch::Qwen2:
      return "qwen2";
    case Arch::OPT:
      return "opt";
    case Arch::Bert:
      return "bert";
    case Arch::Qwen3:
      return "qwen3";
    case Arch::Gemma:
      return "gemma";
    case Arch::Gemma2:
      return "gemma2";
    case Arch::Gemma3:
      return "gemma3_text";
    case Arch::Phi3:
      return "phi3";
    case Arch::Olmo2:
      return "olmo2";
    case Arch::T5:
      return "t5";
    case Arch::Mixtral:
      return "mixtral";
    case Arch::Qwen2Moe:
      return "qwen2_moe";
    case Arch::Olmoe:
      return "olmoe";
  }
  return "?";
}

const char* activationName(Activation a) {
  switch (a) {
    case Activation::ReLU:
      return "relu";
    case Activation::GELU:
      return "gelu";
    case Activation::GELUTanh:
      return "gelu_new";
    case Activation::SiLU:
      return "silu";
  }
  return "?";
}

const char* normPlacementName(NormPlacement p) {
  switch (p) {
    case NormPlacement::Pre:
      return "pre-norm";
    case NormPlacement::Post:
      return "post-norm";
    case NormPlacement::Sandwich:
      return "pre+post-norm";
    case NormPlacement::Output:
      return "output-norm";
  }
  return "?";
}

Activation activationFromName(const std::string& n, const std::string& ctx) {
  if (n == "relu") return Activation::ReLU;
  if (n == "gelu") return Activation::GELU;
  if (n == "gelu_new" || n == "gelu_pytorch_tanh" || n == "gelu_fast") return Activation::GELUTanh;
  if (n == "silu" || n == "swish") return Activation::SiLU;
  throw FormatError(ctx + ": unsupported activation '" + n + "' (supported: relu, gelu, gelu_new, silu)");
}

namespace {

// ---------------------------------------------------------------------------
// Key tables. Sources: the HF configuration_<type>.py defaults and the keys
// modeling_<type>.py reads (transformers 4.4x-4.5x).

const char* kBadEps = "-1.0";

// Keys every PretrainedConfig may carry that cannot change inference results.
void addCommonIgnored(std::vector<ConfigKey>& v) {
  for (const char* k : {"architectures", "torch_dtype", "dtype", "transformers_version", "use_cache", "bos_token_id",
                        "eos_token_id", "pad_token_id", "initializer_range", "_name_or_path"})
    v.push_back({k, KeyUse::Ignored, "", "\"x\"", "",
                 "metadata, token ids, cache or initialisation: no effect on the forward pass"});
  // The attention kernel (eager, sdpa, flash_attention_2, ...): the same products, only precision differs.
  for (const char* k : {"attn_implementation", "_attn_implementation"})
    v.push_back({k, KeyUse::Ignored, "", "\"flash_attention_2\"", "",
                 "attention kernel choice: the same attention, computed by another implementation"});
  v.push_back({"_attn_implementation_autoset", KeyUse::Ignored, "", "true", "",
               "attention kernel bookkeeping written by some transformers versions"});
}

std::vector<ConfigKey> withCommon(std::vector<ConfigKey> v) {
  v.push_back({"model_type", KeyUse::Implemented, "", "", "", "selects the adapter"});
  addCommonIgnored(v);
  return v;
}

// Keys of the llama-like decoders, shared by the families that read them.
std::vector<ConfigKey> decoderCore(bool headDimKey) {
  std::vector<ConfigKey> v = {
      {"vocab_size", KeyUse::Implemented, "", "120", "0", "vocabulary size"},
      {"hidden_size", KeyUse::Implemented, "", "96", "0", "d_model"},
      {"intermediate_size", KeyUse::Implemented, "", "40", "0", "d_ff"},
      {"num_hidden_layers", KeyUse::Implemented, "", "3", "0", "layers"},
      {"num_attention_heads", KeyUse::Implemented, "", "8", "0", "query heads"},
      {"num_key_value_heads", KeyUse::Implemented, "", "4", "3", "key/value heads (GQA); must divide the query heads"},
      {"max_position_embeddings", KeyUse::Implemented, "", "64", "0", "context length (dynamic RoPE, yarn default)"},
      {"rms_norm_eps", KeyUse::Implemented, "", "0.001", kBadEps, "RMSNorm epsilon (> 0)"},
      {"rope_theta", KeyUse::Implemented, "", "5000.0", "0", "RoPE base (> 0)"},
      {"rope_scaling", KeyUse::Implemented, "", "{\"rope_type\": \"linear\", \"factor\": 5.0}",
       "{\"rope_type\": \"linear\", \"factor\": 0.5}", "linear, dynamic, llama3, yarn (factor >= 1); longrope refused"},
      {"partial_rotary_factor", KeyUse::Implemented, "", "0.5", "1.5", "fraction of head_dim that is rotated (0, 1]"},
      {"tie_word_embeddings", KeyUse::Implemented, "", "", "", "head shares the token embedding"},
      {"attention_dropout", KeyUse::Ignored, "", "0.1", "", "dropout: inactive at inference"},
      {"rope_parameters", KeyUse::Refused, "null", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}", "",
       "transformers v5 rope block: not read yet (use rope_theta / rope_scaling)"},
  };
  if (headDimKey)
    v.push_back({"head_dim", KeyUse::Implemented, "", "32", "0", "per-head width (default hidden/heads)"});
  return v;
}

std::vector<ConfigKey> gpt2Keys() {
  return withCommon({
      {"n_layer", KeyUse::Implemented, "", "3", "0", "layers"},
      {"n_embd", KeyUse::Implemented, "", "96", "0", "d_model"},
      {"n_head", KeyUse::Implemented, "", "8", "0", "heads"},
      {"n_inner", KeyUse::Implemented, "", "40", "0", "d_ff (null = 4 d_model)"},
      {"vocab_size", KeyUse::Implemented, "", "120", "0", "vocabulary size"},
      {"n_positions", KeyUse::Implemented, "", "64", "0", "learned positions"},
      {"activation_function", KeyUse::Implemented, "", "\"silu\"", "\"tanh\"", "FFN activation"},
      {"layer_norm_epsilon", KeyUse::Implemented, "", "0.001", kBadEps, "LayerNorm epsilon (> 0)"},
      {"scale_attn_weights", KeyUse::Implemented, "", "false", "", "scores / sqrt(head_dim) when true"},
      {"scale_attn_by_inverse_layer_idx", KeyUse::Implemented, "", "true", "", "scores / (layer + 1) when true"},
      {"tie_word_embeddings", KeyUse::Implemented, "", "false", "", "head shares wte"},
      {"add_cross_attention", KeyUse::Refused, "false", "true", "", "cross-attention blocks (encoder-decoder use)"},
      {"reorder_and_upcast_attn", KeyUse::Ignored, "", "true", "", "computes the same scores in higher precision"},
      {"n_ctx", KeyUse::Ignored, "", "64", "", "not read by the modeling code"},
      {"resid_pdrop", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"embd_pdrop", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"attn_pdrop", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"summary_type", KeyUse::Ignored, "", "\"mean\"", "", "GPT2DoubleHeadsModel only"},
      {"summary_use_proj", KeyUse::Ignored, "", "false", "", "GPT2DoubleHeadsModel only"},
      {"summary_activation", KeyUse::Ignored, "", "\"tanh\"", "", "GPT2DoubleHeadsModel only"},
      {"summary_proj_to_labels", KeyUse::Ignored, "", "false", "", "GPT2DoubleHeadsModel only"},
      {"summary_first_dropout", KeyUse::Ignored, "", "0.2", "", "GPT2DoubleHeadsModel only"},
  });
}

std::vector<ConfigKey> llamaKeys(const std::string& t) {
  auto v = decoderCore(true);
  v.push_back(
      {"hidden_act", KeyUse::Implemented, "", t == "llama" ? "\"relu\"" : "\"gelu\"", "\"tanh\"", "FFN activation"});
  v.push_back({"pretraining_tp", KeyUse::Ignored, "", "2", "", "splits the same products into slices"});
  if (t == "llama") {
    v.push_back({"attention_bias", KeyUse::Implemented, "", "true", "", "q/k/v/o biases"});
    v.push_back({"mlp_bias", KeyUse::Refused, "false", "true", "", "FFN biases"});
  }
  if (t == "mistral")
    v.push_back({"sliding_window", KeyUse::Implemented, "", "3", "0", "attention window (null = none)"});
  if (t == "qwen2" || t == "qwen3") {
    v.push_back({"use_sliding_window", KeyUse::Refused, "false", "true", "", "sliding window on the upper layers"});
    v.push_back({"sliding_window", KeyUse::Ignored, "", "3", "", "only used with use_sliding_window (refused)"});
    v.push_back({"max_window_layers", KeyUse::Ignored, "", "1", "", "only used with use_sliding_window (refused)"});
    v.push_back({"layer_types", KeyUse::Refused, "", "[\"sliding_attention\", \"full_attention\"]", "",
                 "accepted when every layer is full_attention"});
  }
  if (t == "qwen3") v.push_back({"attention_bias", KeyUse::Implemented, "", "true", "", "q/k/v/o biases"});
  return withCommon(v);
}

std::vector<ConfigKey> gemmaKeys(const std::string& t) {
  auto v = decoderCore(true);
  v.push_back({"attention_bias", KeyUse::Implemented, "", "true", "", "q/k/v/o biases"});
  v.push_back({"hidden_activation", KeyUse::Implemented, "", "\"silu\"", "\"tanh\"", "GeGLU activation"});
  if (t == "gemma")
    v.push_back({"hidden_act", KeyUse::Implemented, "", "\"silu\"", "\"tanh\"", "used when hidden_activation is null"});
  if (t != "gemma") {
    v.push_back({"query_pre_attn_scalar", KeyUse::Implemented, "", "64", "0", "scores * query_pre_attn_scalar^-0.5"});
    v.push_back({"sliding_window", KeyUse::Implemented, "", "3", "0", "window of the sliding layers"});
    v.push_back({"layer_types", KeyUse::Implemented, "", "[\"full_attention\", \"sliding_attention\"]",
                 "[\"full_attention\"]", "sliding_attention / full_attention per layer"});
    v.push_back({"final_logit_softcapping", KeyUse::Implemented, "", "5.0", "-1.0", "logits = c tanh(logits / c)"});
    v.push_back({"attn_logit_softcapping", KeyUse::Implemented, "", "5.0", "-1.0", "scores = c tanh(scores / c)"});
    v.push_back({"cache_implementation", KeyUse::Ignored, "", "\"static\"", "", "generation cache kind"});
    v.push_back({"use_bidirectional_attention", KeyUse::Refused, "false", "true", "", "non-causal attention"});
  }
  if (t == "gemma3_text") {
    v.push_back({"rope_local_base_freq", KeyUse::Implemented, "", "500.0", "0", "RoPE base of the sliding layers"});
    v.push_back({"sliding_window_pattern", KeyUse::Implemented, "", "3", "0", "every n-th layer is global"});
  }
  return withCommon(v);
}

std::vector<ConfigKey> phi3Keys() {
  auto v = decoderCore(true);
  v.push_back({"hidden_act", KeyUse::Implemented, "", "\"gelu\"", "\"tanh\"", "FFN activation"});
  v.push_back({"sliding_window", KeyUse::Implemented, "", "3", "0", "attention window (null = none)"});
  v.push_back({"original_max_position_embeddings", KeyUse::Ignored, "", "16", "", "only read by longrope (refused)"});
  v.push_back({"resid_pdrop", KeyUse::Ignored, "", "0.2", "", "dropout"});
  v.push_back({"embd_pdrop", KeyUse::Ignored, "", "0.2", "", "dropout"});
  return withCommon(v);
}

std::vector<ConfigKey> olmo2Keys() {
  auto v = decoderCore(true);  // Olmo2Attention: getattr(config, "head_dim", hidden_size // num_heads)
  v.push_back({"hidden_act", KeyUse::Implemented, "", "\"gelu\"", "\"tanh\"", "FFN activation"});
  v.push_back({"attention_bias", KeyUse::Implemented, "", "true", "", "q/k/v/o biases"});
  return withCommon(v);
}

std::vector<ConfigKey> optKeys() {
  return withCommon({
      {"vocab_size", KeyUse::Implemented, "", "120", "0", "vocabulary size"},
      {"hidden_size", KeyUse::Implemented, "", "96", "0", "d_model"},
      {"num_hidden_layers", KeyUse::Implemented, "", "3", "0", "layers"},
      {"ffn_dim", KeyUse::Implemented, "", "40", "0", "d_ff"},
      {"num_attention_heads", KeyUse::Implemented, "", "8", "0", "heads"},
      {"max_position_embeddings", KeyUse::Implemented, "", "64", "0", "learned positions"},
      {"do_layer_norm_before", KeyUse::Implemented, "", "", "", "pre-norm (true) or post-norm (false)"},
      {"_remove_final_layer_norm", KeyUse::Implemented, "", "true", "", "drops the final norm"},
      {"word_embed_proj_dim", KeyUse::Implemented, "", "32", "0", "embedding width (projections when != d_model)"},
      {"activation_function", KeyUse::Implemented, "", "\"gelu\"", "\"tanh\"", "FFN activation"},
      {"enable_bias", KeyUse::Implemented, "", "false", "", "linear biases"},
      {"tie_word_embeddings", KeyUse::Implemented, "", "false", "", "head shares embed_tokens"},
      {"layer_norm_elementwise_affine", KeyUse::Refused, "true", "false", "", "LayerNorms without weights"},
      {"dropout", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"attention_dropout", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"activation_dropout", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"layerdrop", KeyUse::Ignored, "", "0.2", "", "training-time layer drop"},
      {"init_std", KeyUse::Ignored, "", "0.2", "", "initialisation"},
  });
}

std::vector<ConfigKey> bertKeys() {
  return withCommon({
      {"vocab_size", KeyUse::Implemented, "", "120", "0", "vocabulary size"},
      {"hidden_size", KeyUse::Implemented, "", "96", "0", "d_model"},
      {"num_hidden_layers", KeyUse::Implemented, "", "3", "0", "layers"},
      {"num_attention_heads", KeyUse::Implemented, "", "8", "0", "heads"},
      {"intermediate_size", KeyUse::Implemented, "", "40", "0", "d_ff"},
      {"hidden_act", KeyUse::Implemented, "", "\"relu\"", "\"tanh\"", "FFN and head activation"},
      {"max_position_embeddings", KeyUse::Implemented, "", "64", "0", "learned positions"},
      {"type_vocab_size", KeyUse::Implemented, "", "3", "", "token types"},
      {"layer_norm_eps", KeyUse::Implemented, "", "0.001", kBadEps, "LayerNorm epsilon (> 0)"},
      {"tie_word_embeddings", KeyUse::Implemented, "", "false", "", "decoder shares word_embeddings"},
      {"position_embedding_type", KeyUse::Refused, "\"absolute\"", "\"relative_key\"", "", "relative position scores"},
      {"is_decoder", KeyUse::Refused, "false", "true", "", "causal BERT"},
      {"add_cross_attention", KeyUse::Refused, "false", "true", "", "cross-attention blocks"},
      {"hidden_dropout_prob", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"attention_probs_dropout_prob", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"classifier_dropout", KeyUse::Ignored, "", "0.2", "", "classification heads only"},
      {"chunk_size_feed_forward", KeyUse::Ignored, "", "4", "", "computes the FFN in chunks: same values"},
  });
}

// T5 (configuration_t5.py, modeling_t5.py). save_pretrained writes dense_act_fn
// and is_gated_act next to feed_forward_proj; PretrainedConfig sets the saved
// values after T5Config derived them, so when present they win.
std::vector<ConfigKey> t5Keys() {
  return withCommon({
      {"vocab_size", KeyUse::Implemented, "", "120", "0", "vocabulary size"},
      {"d_model", KeyUse::Implemented, "", "96", "0", "d_model"},
      {"d_kv", KeyUse::Implemented, "", "24", "0", "per-head width (q/k/v project to num_heads x d_kv)"},
      {"d_ff", KeyUse::Implemented, "", "40", "0", "d_ff"},
      {"num_layers", KeyUse::Implemented, "", "3", "0",
       "encoder blocks (and decoder blocks when num_decoder_layers is null)"},
      {"num_decoder_layers", KeyUse::Implemented, "", "3", "0", "decoder blocks (null = num_layers)"},
      {"num_heads", KeyUse::Implemented, "", "8", "0", "heads"},
      {"relative_attention_num_buckets", KeyUse::Implemented, "", "16", "3", "relative position buckets (>= 4)"},
      {"relative_attention_max_distance", KeyUse::Implemented, "", "64", "2",
       "distance reaching the last bucket (> num_buckets / 2)"},
      {"layer_norm_epsilon", KeyUse::Implemented, "", "0.001", kBadEps, "T5LayerNorm epsilon (> 0)"},
      {"feed_forward_proj", KeyUse::Implemented, "", "\"gated-gelu\"", "\"gated-gelu-x\"",
       "ACT or gated-ACT; gated-gelu means gelu_new"},
      {"dense_act_fn", KeyUse::Implemented, "", "\"silu\"", "\"tanh\"",
       "FFN activation; overrides feed_forward_proj's"},
      {"is_gated_act", KeyUse::Implemented, "", "true", "", "act(wi_0 x) * wi_1 x; overrides feed_forward_proj's"},
      {"tie_word_embeddings", KeyUse::Implemented, "", "", "",
       "lm_head is shared.weight, decoder output scaled by d_model^-0.5 (false: own lm_head, no scaling)"},
      {"decoder_start_token_id", KeyUse::Implemented, "", "5", "-1",
       "first decoder input of generation (< vocab_size)"},
      {"is_encoder_decoder", KeyUse::Refused, "true", "false", "", "T5ForConditionalGeneration runs both stacks"},
      {"tie_encoder_decoder", KeyUse::Refused, "false", "true", "", "decoder weights tied to the encoder's"},
      {"is_decoder", KeyUse::Ignored, "", "true", "", "T5ForConditionalGeneration sets it per stack"},
      {"n_positions", KeyUse::Ignored, "", "64", "", "not read by the modeling code (old configs)"},
      {"output_past", KeyUse::Ignored, "", "false", "", "cache flag of old configs"},
      {"task_specific_params", KeyUse::Ignored, "", "{\"translation_en_to_de\": {\"prefix\": \"x\"}}", "",
       "generation prompts of pipelines"},
      {"dropout_rate", KeyUse::Ignored, "", "0.2", "", "dropout"},
      {"classifier_dropout", KeyUse::Ignored, "", "0.2", "", "classification heads only"},
      {"initializer_factor", KeyUse::Ignored, "", "0.5", "", "initialisation"},
  });
}

// Native MoE decoders (configuration_/modeling_ mixtral.py, qwen2_moe.py,
// olmoe.py). The routing keys are implemented; the auxiliary load-balancing
// loss and router jitter only act in training.
std::vector<ConfigKey> moeKeys(const std::string& t) {
  auto v = decoderCore(t != "olmoe");  // OlmoeAttention derives head_dim from hidden_size / heads
  v.push_back({"hidden_act", KeyUse::Implemented, "", "\"gelu\"", "\"tanh\"", "expert (and dense MLP) activation"});
  const char* experts = t == "mixtral" ? "num_local_experts" : "num_experts";
  v.push_back({experts, KeyUse::Implemented, "", "3", t == "qwen2_moe" ? "-1" : "0",
               t == "qwen2_moe" ? "routed experts per MoE layer (0 = every layer dense)" : "routed experts per layer"});
  v.push_back(
      {"num_experts_per_tok", KeyUse::Implemented, "", "1", "0", "top-k experts per token (<= the expert count)"});
  v.push_back({"output_router_logits", KeyUse::Ignored, "", "true", "", "returns router logits for the training loss"});
  v.push_back({"router_aux_loss_coef", KeyUse::Ignored, "", "0.5", "", "weight of the training load-balancing loss"});
  if (t == "mixtral") {
    v.push_back({"sliding_window", KeyUse::Implemented, "", "3", "0", "attention window (null = none)"});
    v.push_back({"router_jitter_noise", KeyUse::Ignored, "", "0.1", "", "multiplicative router noise, training only"});
  } else {
    v.push_back({"norm_topk_prob", KeyUse::Implemented, "", "", "", "renormalise the k chosen probabilities to sum 1"});
  }
  if (t == "qwen2_moe") {
    v.push_back({"qkv_bias", KeyUse::Implemented, "", "false", "", "q/k/v biases (o_proj has none)"});
    v.push_back({"moe_intermediate_size", KeyUse::Implemented, "", "24", "0", "hidden width of each routed expert"});
    v.push_back(
        {"shared_expert_intermediate_size", KeyUse::Implemented, "", "24", "0", "hidden width of the shared expert"});
    v.push_back({"decoder_sparse_step", KeyUse::Implemented, "", "2", "0", "layer L is MoE when (L + 1) % step == 0"});
    v.push_back(
        {"mlp_only_layers", KeyUse::Implemented, "", "[0]", "[-1]", "layers with a dense MLP (intermediate_size)"});
    v.push_back({"use_sliding_window", KeyUse::Refused, "false", "true", "", "sliding window on the lower layers"});
    v.push_back({"sliding_window", KeyUse::Ignored, "", "3", "", "only used with use_sliding_window (refused)"});
    v.push_back({"max_window_layers", KeyUse::Ignored, "", "1", "", "only used with use_sliding_window (refused)"});
    v.push_back({"layer_types", KeyUse::Refused, "", "[\"sliding_attention\", \"full_attention\"]", "",
                 "accepted when every layer is full_attention"});
  }
  if (t == "olmoe") {
    v.push_back({"attention_bias", KeyUse::Implemented, "", "true", "", "q/k/v/o biases"});
    v.push_back({"clip_qkv", KeyUse::Refused, "null", "8.0", "", "clamps q, k and v to [-clip, clip]"});
  }
  return withCommon(v);
}

const std::map<std::string, std::vector<ConfigKey>>& keyTables() {
  static const std::map<std::string, std::vector<ConfigKey>> t = {
      {"gpt2", gpt2Keys()},
      {"llama", llamaKeys("llama")},
      {"mistral", llamaKeys("mistral")},
      {"qwen2", llamaKeys("qwen2")},
      {"qwen3", llamaKeys("qwen3")},
      {"opt", optKeys()},
      {"bert", bertKeys()},
      {"gemma", gemmaKeys("gemma")},
      {"gemma2", gemmaKeys("gemma2")},
      {"gemma3_text", gemmaKeys("gemma3_text")},
      {"phi3", phi3Keys()},
      {"olmo2", olmo2Keys()},
      {"t5", t5Keys()},
      {"mixtral", moeKeys("mixtral")},
      {"qwen2_moe", moeKeys("qwen2_moe")},
      {"olmoe", moeKeys("olmoe")},
  };
  return t;
}

// Typed accessors that name the key and the file in their error.
struct Reader {
  const nlohmann::json& j;
  std::string ctx;
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw FormatError(ctx + ": key '" + key + "' " + what);
  }
  int integer(const char* key) const {
    if (!j.contains(key)) throw FormatError(ctx + ": missing key '" + key + "'");
    const auto& v = j[key];
    if (!v.is_number_integer()) fail(key, "must be a non-negative integer");
    // Range check on the 64-bit value before narrowing.
    if (v.is_number_unsigned() ? v.get<unsigned long long>() > (1ull << 30)
                               : (v.get<long long>() < 0 || v.get<long long>() > (1ll << 30)))
      fail(key, "must be an integer in [0, 2^30], got " + v.dump());
    return v.get<int>();
  }
  int integer(const char* key, int fallback) const { return has(key) ? integer(key) : fallback; }
  /// An integer >= 1.
  int positive(const char* key) const {
    int v = integer(key);
    if (v < 1) fail(key, "must be >= 1, got " + std::to_string(v));
    return v;
  }
  int positive(const char* key, int fallback) const { return has(key) ? positive(key) : fallback; }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_number()) fail(key, "must be a number");
    double v = j[key].get<double>();
    if (!std::isfinite(v)) fail(key, "must be finite");
    return v;
  }
  /// A finite number > 0.
  double positiveNumber(const char* key, double fallback) const {
    double v = number(key, fallback);
    if (!(v > 0)) fail(key, "must be > 0, got " + j[key].dump());
    return v;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_boolean()) fail(key, "must be true or false");
    return j[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_string()) fail(key, "must be a string");
    return j[key].get<std::string>();
  }
};

double yarnMscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// The rope_scaling block (HF modeling_rope_utils): every key of the chosen
// rope_type is read; keys of other types, and unknown types, are refused.
RopeConfig parseRope(const nlohmann::json& j, const Reader& r, double theta, int headDim, int maxPos) {
  RopeConfig rc;
  rc.theta = theta;
  rc.maxPos = maxPos;
  double partial = r.number("partial_rotary_factor", 1.0);
  if (!(partial > 0 && partial <= 1))
    r.fail("partial_rotary_factor", "must be in (0, 1], got " + j["partial_rotary_factor"].dump());
  rc.dim = static_cast<int>(headDim * partial);
  if (rc.dim < 2 || rc.dim % 2)
    r.fail("partial_rotary_factor", "gives " + std::to_string(rc.dim) + " rotated dims of head_dim " +
                                        std::to_string(headDim) + " (must be even and >= 2)");
  if (!r.has("rope_scaling")) return rc;
  const auto& s = j["rope_scaling"];
  const std::string k = "rope_scaling";
  if (!s.is_object()) r.fail(k, "must be an object or null");
  std::string type;
  if (s.contains("rope_type") && s["rope_type"].is_string())
    type = s["rope_type"].get<std::string>();
  else if (s.contains("type") && s["type"].is_string())
    type = s["type"].get<std::string>();
  else
    r.fail(k, "has no rope_type");
  if (type == "longrope" || type == "su") r.fail(k, "rope_type '" + type + "' (LongRoPE) is not supported");
  static const std::map<std::string, std::vector<std::string>> allowed = {
      {"default", {}},
      {"linear", {"factor"}},
      {"dynamic", {"factor", "original_max_position_embeddings"}},
      {"llama3", {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}},
      {"yarn",
       {"factor", "attention_factor", "beta_fast", "beta_slow", "original_max_position_embeddings", "mscale",
        "mscale_all_dim", "truncate"}},
  };
  auto it = allowed.find(type);
  if (it == allowed.end())
    r.fail(k, "rope_type '" + type + "' is not supported (supported: default, linear, dynamic, llama3, yarn)");
  for (auto e = s.begin(); e != s.end(); ++e) {
    if (e.key() == "rope_type" || e.key() == "type") continue;
    if (std::find(it->second.begin(), it->second.end(), e.key()) == it->second.end())
      r.fail(k + "." + e.key(), "is not supported for rope_type '" + type + "'");
  }
  rc.type = type;
  Reader sub{s, r.ctx};
  auto subKey = [&](const char* key) { return k + "." + key; };
  auto num = [&](const char* key, double fallback, bool required) {
    if (required && !sub.has(key)) throw FormatError(r.ctx + ": missing key '" + subKey(key) + "'");
    if (!sub.has(key)) return fallback;
    if (!s[key].is_number() || !std::isfinite(s[key].get<double>())) r.fail(subKey(key), "must be a finite number");
    return s[key].get<double>();
  };
  if (type == "default") return rc;
  rc.factor = num("factor", 1.0, true);
  if (!(rc.factor >= 1)) r.fail(subKey("factor"), "must be >= 1, got " + s["factor"].dump());
  if (type == "llama3" || type == "yarn") {
    double o = num("original_max_position_embeddings", type == "yarn" ? maxPos : 0, type == "llama3");
    if (!(o >= 1) || o != std::floor(o)) r.fail(subKey("original_max_position_embeddings"), "must be an integer >= 1");
    rc.originalMaxPos = static_cast<int>(o);
  }
  if (type == "llama3") {
    rc.lowFreqFactor = num("low_freq_factor", 1, true);
    rc.highFreqFactor = num("high_freq_factor", 4, true);
    if (!(rc.lowFreqFactor > 0) || !(rc.highFreqFactor > rc.lowFreqFactor))
      r.fail(subKey("high_freq_factor"), "must be greater than low_freq_factor > 0");
  }
  if (type == "yarn") {
    // HF: `rope_scaling.get("beta_fast") or 32`: null and 0 both mean the default.
    rc.betaFast = num("beta_fast", 32, false);
    if (rc.betaFast == 0) rc.betaFast = 32;
    rc.betaSlow = num("beta_slow", 1, false);
    if (rc.betaSlow == 0) rc.betaSlow = 1;
    if (!(rc.betaFast > 0) || !(rc.betaSlow > 0)) r.fail(subKey("beta_fast"), "and beta_slow must be > 0");
    if (sub.has("truncate")) {
      if (!s["truncate"].is_boolean()) r.fail(subKey("truncate"), "must be true or false");
      rc.truncate = s["truncate"].get<bool>();
    }
    if (sub.has("attention_factor")) {
      rc.attentionFactor = num("attention_factor", 1, false);
      if (!(rc.attentionFactor > 0)) r.fail(subKey("attention_factor"), "must be > 0");
    } else {
      double m = num("mscale", 0, false), mAll = num("mscale_all_dim", 0, false);
      rc.attentionFactor =
          (m != 0 && mAll != 0) ? yarnMscale(rc.factor, m) / yarnMscale(rc.factor, mAll) : yarnMscale(rc.factor, 1.0);
    }
  }
  return rc;
}

// layer_types: "full_attention" / "sliding_attention" per layer.
std::vector<bool> parseLayerTypes(const nlohmann::json& j, const Reader& r, int nLayer) {
  const auto& v = j["layer_types"];
  if (!v.is_array() || static_cast<int>(v.size()) != nLayer)
    r.fail("layer_types", "must be a list of " + std::to_string(nLayer) + " entries (one per layer)");
  std::vector<bool> sliding;
  for (const auto& e : v) {
    if (e == "full_attention")
      sliding.push_back(false);
    else if (e == "sliding_attention")
      sliding.push_back(true);
    else
      r.fail("layer_types", "entry " + e.dump() + " is not full_attention or sliding_attention");
  }
  return sliding;
}

void readLlamaLike(ModelConfig& c, const nlohmann::json& j, const Reader& r, int defaultHeadDim) {
  c.nLayer = r.positive("num_hidden_layers");
  c.dModel = r.positive("hidden_size");
  c.nHead = r.positive("num_attention_heads");
  c.nKVHead = r.positive("num_key_value_heads", c.nHead);
  c.dFF = r.positive("intermediate_size");
  c.vocab = r.positive("vocab_size");
  c.norm = NormKind::RMSNorm;
  c.pos = PosKind::Rope;
  c.gated = true;
  c.headDim = r.positive("head_dim", defaultHeadDim);
  (void)j;
}

}  // namespace

const std::vector<std::string>& supportedModelTypes() {
  static const std::vector<std::string> v = {"gpt2", "llama",   "mistral",   "qwen2",       "qwen3", "opt",
                                             "bert", "gemma",   "gemma2",    "gemma3_text", "phi3",  "olmo2",
                                             "t5",   "mixtral", "qwen2_moe", "olmoe"};
  return v;
}

const std::vector<ConfigKey>& configKeys(const std::string& modelType) {
  auto it = keyTables().find(modelType);
  if (it == keyTables().end()) throw FormatError("unsupported model_type '" + modelType + "'");
  return it->second;
}

std::vector<Site> ModelConfig::ffnSites() const {
  std::vector<Site> v;
  if (!encoderDecoder) {
    for (int L = 0; L < nLayer; ++L) v.push_back(Site::ofLayer(L));
    return v;
  }
  for (SiteStack s : {SiteStack::Encoder, SiteStack::Decoder})
    for (int L = 0; L < layerCount(s); ++L) v.push_back(Site{s, L, -1, false});
  return v;
}

namespace {
// "blk.0, blk.2": the single-stack sites of `layers`.
std::string siteList(const std::vector<int>& layers) {
  std::string s;
  for (int L : layers) s += (s.empty() ? "" : ", ") + Site::ofLayer(L).name();
  return s;
}
}  // namespace

std::string ModelConfig::stackSummary() const {
  std::string out;
  for (SiteStack st : stacks()) {
    const int n = layerCount(st);
    const std::string prefix = st == SiteStack::Encoder ? "enc.blk." : st == SiteStack::Decoder ? "dec.blk." : "blk.";
    const char* name = st == SiteStack::Encoder ? "encoder" : st == SiteStack::Decoder ? "decoder" : "single";
    out += (out.empty() ? "" : "; ") + std::string(name) + ": " + std::to_string(n) + (n == 1 ? " layer" : " layers");
    if (n > 0) out += ", " + prefix + (n == 1 ? "0" : "0-" + std::to_string(n - 1));
  }
  return out;
}

std::string ModelConfig::moeLayerSummary() const {
  if (expertCount == 0) return "none";
  std::vector<int> moe, dense;
  for (int L = 0; L < nLayer; ++L) (moeLayer(L) ? moe : dense).push_back(L);
  std::string s = "MoE " + (moe.empty() ? std::string("none") : siteList(moe));
  if (!moe.empty())
    s += " (sites blk.L.exp.0" + (expertCount > 1 ? "-" + std::to_string(expertCount - 1) : std::string()) +
         (dShared > 0 ? ", blk.L.shared" : "") + ")";
  if (!dense.empty()) s += "; dense " + siteList(dense) + " (d_ff " + std::to_string(dFF) + ")";
  return s;
}

std::vector<Site> ModelConfig::expertSites(int layer) const {
  std::vector<Site> v;
  if (!moeLayer(layer)) return v;
  for (int e = 0; e < expertCount; ++e) v.push_back(Site{SiteStack::Single, layer, e, false});
  if (dShared > 0) v.push_back(Site{SiteStack::Single, layer, -1, true});
  return v;
}

int ModelConfig::ffnSiteIndex(const Site& site) const {
  if (site.expert >= 0 || site.shared || site.layer < 0) return -1;
  if ((site.stack == SiteStack::Single) == encoderDecoder) return -1;
  if (site.layer >= layerCount(site.stack)) return -1;
  if (site.stack == SiteStack::Single && moeLayer(site.layer)) return -1;
  return siteIndexOf(site, nLayer);
}

int ModelConfig::siteIndex(const Site& site) const {
  if (site.expert < 0 && !site.shared) return ffnSiteIndex(site);
  if (encoderDecoder || !moeLayer(site.layer) || (site.shared && dShared <= 0)) return -1;
  return expertSiteIndexOf(site, nLayer, expertCount);
}

std::vector<Site> ModelConfig::indexedSites() const {
  std::vector<Site> v;
  for (const Site& s : ffnSites())
    if (ffnSiteIndex(s) >= 0) v.push_back(s);
  for (int L = 0; L < nLayer; ++L)
    if (moeLayer(L))
      for (int e = 0; e < expertCount; ++e) v.push_back(Site{SiteStack::Single, L, e, false});
  if (dShared > 0)
    for (int L = 0; L < nLayer; ++L)
      if (moeLayer(L)) v.push_back(Site{SiteStack::Single, L, -1, true});
  return v;
}

std::string ModelConfig::windowPattern() const {
  if (slidingWindow <= 0) return "none (full attention)";
  std::string w = std::to_string(slidingWindow);
  if (layerSliding.empty()) return "every layer, window " + w;
  std::string s;
  for (bool b : layerSliding) s += b ? 'L' : 'G';
  return "window " + w + " on local layers, pattern " + s + " (L local, G global)";
}

namespace {
std::string num(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}
std::string ropeText(const RopeConfig& r, int headDim) {
  std::string s = r.type + " (theta " + num(r.theta);
  if (r.type != "default") s += ", factor " + num(r.factor);
  if (r.type == "llama3")
    s += ", low/high freq factor " + num(r.lowFreqFactor) + "/" + num(r.highFreqFactor) + ", original context " +
         std::to_string(r.originalMaxPos);
  if (r.type == "yarn")
    s += ", beta " + num(r.betaFast) + "/" + num(r.betaSlow) + ", original context " +
         std::to_string(r.originalMaxPos) + ", attention factor " + num(r.attentionFactor);
  if (r.type == "dynamic") s += ", from " + std::to_string(r.maxPos) + " positions";
  return s + "), " + std::to_string(r.dim) + " of " + std::to_string(headDim) + " dims";
}
}  // namespace

std::string ModelConfig::normSummary() const {
  std::string s = norm == NormKind::RMSNorm ? (normPlusOne ? "rmsnorm (1 + w)" : "rmsnorm") : "layernorm";
  s += ", eps " + num(normEps) + ", " + normPlacementName(placement);
  if (qkNorm == QkNorm::PerHead) s += ", q/k norm per head";
  if (qkNorm == QkNorm::Full) s += ", q/k norm over all heads";
  if (!finalNorm) s += ", no final norm";
  return s;
}

std::string ModelConfig::ropeSummary() const {
  if (pos == PosKind::Learned) return "learned, " + std::to_string(maxPos);
  if (pos == PosKind::Relative)
    return "relative bias, " + std::to_string(relBuckets) + " buckets, max distance " + std::to_string(relMaxDistance) +
           " (bidirectional encoder, causal decoder)";
  std::string s = "rope " + ropeText(rope, headDim);
  if (arch == Arch::Gemma3) s += "; sliding layers: rope " + ropeText(ropeLocal, headDim);
  return s;
}

std::string ModelConfig::attentionSummary() const {
  std::string s = attnScale > 0 ? "scale " + num(attnScale) : "scale 1/sqrt(" + std::to_string(headDim) + ")";
  if (attnScaleInverseLayer) s += " / (layer + 1)";
  if (attnSoftcap > 0) s += ", softcap " + num(attnSoftcap);
  if (finalSoftcap > 0) s += ", logit softcap " + num(finalSoftcap);
  if (embedScale) s += ", embeddings x sqrt(d_model)";
  if (encoderDecoder) s += ", decoder cross-attention";
  if (headScale != 1.0) s += ", head input x " + num(headScale);
  return s;
}

std::string ModelConfig::describe() const {
  std::ostringstream o;
  o.precision(17);
  o << archName(arch) << " layers=" << nLayer << " d=" << dModel << " heads=" << nHead << "/" << nKVHead
    << " head_dim=" << headDim << " ff=" << dFF << " vocab=" << vocab << " maxpos=" << maxPos << " posoff=" << posOffset
    << " types=" << typeVocab << " embproj=" << embedProjDim << " act=" << activationName(act) << " gated=" << gated
    << " norm=" << int(norm) << " eps=" << normEps << " plus1=" << normPlusOne << " place=" << int(placement)
    << " final=" << finalNorm << " qk=" << int(qkNorm) << " pos=" << int(pos);
  for (const RopeConfig* rc : {&rope, &ropeLocal})
    o << " rope(" << rc->type << "," << rc->theta << "," << rc->dim << "," << rc->factor << "," << rc->maxPos << ","
      << rc->originalMaxPos << "," << rc->lowFreqFactor << "," << rc->highFreqFactor << "," << rc->betaFast << ","
      << rc->betaSlow << "," << rc->truncate << "," << rc->attentionFactor << ")";
  o << " window=" << windowPattern() << " scale=" << attnScale << " invlayer=" << attnScaleInverseLayer
    << " softcap=" << attnSoftcap << "/" << finalSoftcap << " embscale=" << embedScale << " bias=" << attnBias
    << attnOutBias << ffnBias << " causal=" << causal << " tied=" << tiedEmbeddings << " encdec=" << encoderDecoder
    << " declayers=" << nDecoderLayer << " rel=" << relBuckets << "/" << relMaxDistance
    << " decstart=" << decoderStartId << " headscale=" << headScale << " experts=" << expertCount << "/" << expertTopK
    << " dexpert=" << dExpert << " normtopk=" << normTopK << " shared=" << dShared << " moelayers=";
  for (bool m : layerMoe) o << (m ? 'M' : 'D');
  return o.str();
}

std::string ModelConfig::moeSummary() const {
  if (expertCount == 0) return "none";
  std::string s = std::to_string(expertCount) + " experts x " + std::to_string(dExpert) + ", top-" +
                  std::to_string(expertTopK) + (normTopK ? " renormalised" : " (softmax probabilities)");
  if (dShared > 0) s += ", shared expert " + std::to_string(dShared) + " (sigmoid gate)";
  std::string layers;
  bool dense = false;
  for (bool m : layerMoe) layers += m ? 'M' : 'D', dense |= !m;
  s += "; layers " + layers + " (M MoE" + (dense ? ", D dense " + std::to_string(dFF) : std::string()) + ")";
  return s;
}

ModelConfig ModelConfig::fromJson(const nlohmann::json& j, const std::string& ctx) {
  if (!j.is_object()) throw FormatError(ctx + ": not a JSON object");
  Reader r{j, ctx};
  ModelConfig c;
  c.raw = j;
  c.modelType = r.string("model_type", "");
  if (c.modelType.empty()) throw FormatError(ctx + ": missing key 'model_type'");
  const std::string& t = c.modelType;
  if (!keyTables().count(t)) {
    std::string list;
    for (const auto& s : supportedModelTypes()) list += (list.empty() ? "" : ", ") + s;
    std::string hint = t == "gemma3" ? " (give the text model: model_type gemma3_text)" : "";
    throw FormatError(ctx + ": unsupported model_type '" + t + "'" + hint + " (supported: " + list + ")");
  }
  // Refused keys first, so a checkpoint using one names it rather than a consequence.
  for (const auto& k : configKeys(t)) {
    if (k.use != KeyUse::Refused || !*k.neutral || !r.has(k.name)) continue;
    if (j[k.name] != nlohmann::json::parse(k.neutral))
      throw FormatError(ctx + ": key '" + k.name + "' = " + j[k.name].dump() + " is not supported (" + k.note +
                        "; only " + k.neutral + " is)");
  }
  if (t == "gpt2") {
    c.arch = Arch::GPT2;
    c.nLayer = r.positive("n_layer");
    c.dModel = r.positive("n_embd");
    c.nHead = r.positive("n_head");
    c.dFF = r.positive("n_inner", 4 * c.dModel);
    c.vocab = r.positive("vocab_size");
    c.maxPos = r.positive("n_positions", 1024);
    c.act = activationFromName(r.string("activation_function", "gelu_new"), ctx + ": key 'activation_function'");
    c.normEps = r.positiveNumber("layer_norm_epsilon", 1e-5);
    c.attnBias = c.attnOutBias = c.ffnBias = true;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
    // GPT2Attention: scores / sqrt(head_dim) only if scale_attn_weights, and
    // additionally / (layer_idx + 1) if scale_attn_by_inverse_layer_idx.
    if (!r.boolean("scale_attn_weights", true)) c.attnScale = 1.0;
    c.attnScaleInverseLayer = r.boolean("scale_attn_by_inverse_layer_idx", false);
  } else if (t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3" || t == "phi3" || t == "olmo2") {
    c.arch = t == "llama"     ? Arch::Llama
             : t == "mistral" ? Arch::Mistral
             : t == "qwen2"   ? Arch::Qwen2
             : t == "qwen3"   ? Arch::Qwen3
             : t == "phi3"    ? Arch::Phi3
                              : Arch::Olmo2;
    c.nLayer = r.positive("num_hidden_layers");
    c.dModel = r.positive("hidden_size");
    c.nHead = r.positive("num_attention_heads");
    // Qwen3Config defaults head_dim to 128; the others derive it from hidden_size / heads (olmo2's
    // config class has no head_dim, but Olmo2Attention reads one that config.json sets).
    int derived = c.dModel % c.nHead ? 0 : c.dModel / c.nHead;
    readLlamaLike(c, j, r, t == "qwen3" ? 128 : derived);
    if (c.headDim == 0)
      throw FormatError(ctx + ": hidden size " + std::to_string(c.dModel) + " is not divisible by the head count " +
                        std::to_string(c.nHead));
    c.maxPos = r.positive("max_position_embeddings", t == "llama" || t == "olmo2" ? 2048
                                                     : t == "phi3"                ? 4096
                                                     : t == "mistral"             ? 32768
                                                                                  : 32768);
    c.act = activationFromName(r.string("hidden_act", "silu"), ctx + ": key 'hidden_act'");
    c.normEps = r.positiveNumber("rms_norm_eps", t == "phi3" || t == "olmo2" ? 1e-5 : 1e-6);
    c.ropeTheta = r.positiveNumber("rope_theta", 10000.0);
    c.attnBias = t == "qwen2" ? true : (t == "mistral" || t == "phi3") ? false : r.boolean("attention_bias", false);
    c.attnOutBias = t == "qwen2" ? false : c.attnBias;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", false);
    // MistralConfig defaults sliding_window to 4096; an explicit null means no window.
    if (t == "mistral") c.slidingWindow = j.contains("sliding_window") ? r.positive("sliding_window", 0) : 4096;
    if (t == "phi3") c.slidingWindow = r.positive("sliding_window", 0);
    if ((t == "qwen2" || t == "qwen3") && r.has("layer_types")) {
      for (bool s : parseLayerTypes(j, r, c.nLayer))
        if (s) r.fail("layer_types", "with sliding_attention layers is not supported");
    }
    if (t == "qwen3") c.qkNorm = QkNorm::PerHead;
    if (t == "olmo2") {
      c.qkNorm = QkNorm::Full;
      c.placement = NormPlacement::Output;
    }
  } else if (t == "gemma" || t == "gemma2" || t == "gemma3_text") {
    c.arch = t == "gemma" ? Arch::Gemma : t == "gemma2" ? Arch::Gemma2 : Arch::Gemma3;
    readLlamaLike(c, j, r, 256);
    c.maxPos = r.positive("max_position_embeddings", t == "gemma3_text" ? 131072 : 8192);
    // GemmaMLP: hidden_activation, falling back to hidden_act (gemma v1 configs).
    std::string act = r.string("hidden_activation", "");
    const char* actKey = "hidden_activation";
    if (act.empty() && t == "gemma") act = r.string("hidden_act", "gelu_pytorch_tanh"), actKey = "hidden_act";
    if (act.empty()) act = "gelu_pytorch_tanh";
    c.act = activationFromName(act, ctx + ": key '" + actKey + "'");
    c.normEps = r.positiveNumber("rms_norm_eps", 1e-6);
    c.normPlusOne = true;
    c.embedScale = true;
    c.ropeTheta = r.positiveNumber("rope_theta", t == "gemma3_text" ? 1000000.0 : 10000.0);
    c.attnBias = c.attnOutBias = r.boolean("attention_bias", false);
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
    if (t != "gemma") {
      c.placement = NormPlacement::Sandwich;
      c.attnScale = 1.0 / std::sqrt(r.positiveNumber("query_pre_attn_scalar", 256));
      c.slidingWindow = r.positive("sliding_window", 4096);
      auto cap = [&](const char* key, double fallback) {
        if (!r.has(key)) return j.contains(key) ? 0.0 : fallback;  // explicit null = off
        return r.positiveNumber(key, fallback);
      };
      c.attnSoftcap = cap("attn_logit_softcapping", t == "gemma2" ? 50.0 : 0.0);
      c.finalSoftcap = cap("final_logit_softcapping", t == "gemma2" ? 30.0 : 0.0);
      if (r.has("layer_types")) {
        c.layerSliding = parseLayerTypes(j, r, c.nLayer);
      } else {
        // gemma2: even layers slide; gemma3: every sliding_window_pattern-th layer is global.
        int pattern = t == "gemma2" ? 2 : r.positive("sliding_window_pattern", 6);
        for (int L = 0; L < c.nLayer; ++L) c.layerSliding.push_back(((L + 1) % pattern) != 0);
      }
      if (t == "gemma3_text") c.qkNorm = QkNorm::PerHead;
    }
  } else if (t == "opt") {
    c.arch = Arch::OPT;
    c.nLayer = r.positive("num_hidden_layers");
    c.dModel = r.positive("hidden_size");
    c.nHead = r.positive("num_attention_heads");
    c.dFF = r.positive("ffn_dim");
    c.vocab = r.positive("vocab_size");
    c.maxPos = r.positive("max_position_embeddings", 2048);
    c.posOffset = 2;
    c.act = activationFromName(r.string("activation_function", "relu"), ctx + ": key 'activation_function'");
    c.placement = r.boolean("do_layer_norm_before", true) ? NormPlacement::Pre : NormPlacement::Post;
    c.finalNorm = c.placement == NormPlacement::Pre && !r.boolean("_remove_final_layer_norm", false);
    c.embedProjDim = r.positive("word_embed_proj_dim", c.dModel);
    bool bias = r.boolean("enable_bias", true);
    c.attnBias = c.attnOutBias = c.ffnBias = bias;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
  } else if (t == "mixtral" || t == "qwen2_moe" || t == "olmoe") {
    // Llama-style decoders whose FFNs are (mostly) sparse MoE blocks.
    c.arch = t == "mixtral" ? Arch::Mixtral : t == "qwen2_moe" ? Arch::Qwen2Moe : Arch::Olmoe;
    c.nLayer = r.positive("num_hidden_layers");
    c.dModel = r.positive("hidden_size");
    c.nHead = r.positive("num_attention_heads");
    const int derived = c.dModel % c.nHead ? 0 : c.dModel / c.nHead;
    readLlamaLike(c, j, r, derived);
    if (t == "olmoe") c.headDim = derived;  // OlmoeAttention: hidden_size // num_heads, head_dim is not read
    if (c.headDim == 0)
      throw FormatError(ctx + ": hidden size " + std::to_string(c.dModel) + " is not divisible by the head count " +
                        std::to_string(c.nHead));
    c.maxPos = r.positive("max_position_embeddings", t == "mixtral" ? 131072 : t == "qwen2_moe" ? 32768 : 4096);
    c.act = activationFromName(r.string("hidden_act", "silu"), ctx + ": key 'hidden_act'");
    c.normEps = r.positiveNumber("rms_norm_eps", t == "qwen2_moe" ? 1e-6 : 1e-5);
    c.ropeTheta = r.positiveNumber("rope_theta", t == "mixtral" ? 1000000.0 : 10000.0);
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", false);
    const char* expertKey = t == "mixtral" ? "num_local_experts" : "num_experts";
    c.expertCount = t == "qwen2_moe" ? r.integer(expertKey, 60) : r.positive(expertKey, t == "mixtral" ? 8 : 64);
    c.expertTopK = r.positive("num_experts_per_tok", t == "mixtral" ? 2 : t == "qwen2_moe" ? 4 : 8);
    if (c.expertCount > 0 && c.expertTopK > c.expertCount)
      r.fail("num_experts_per_tok", "(" + std::to_string(c.expertTopK) + ") must be <= " + expertKey + " (" +
                                        std::to_string(c.expertCount) + ")");
    c.dExpert = c.dFF;
    c.layerMoe.assign(static_cast<size_t>(c.nLayer), c.expertCount > 0);
    if (t == "mixtral") {
      // MixtralSparseMoeBlock always renormalises; sliding_window defaults to None (no window).
      c.normTopK = true;
      c.slidingWindow = r.positive("sliding_window", 0);
    } else {
      c.normTopK = r.boolean("norm_topk_prob", false);
    }
    if (t == "olmoe") {
      c.qkNorm = QkNorm::Full;  // q_norm [hidden], k_norm [kv_heads * head_dim], before RoPE
      c.attnBias = c.attnOutBias = r.boolean("attention_bias", false);
    }
    if (t == "qwen2_moe") {
      c.attnBias = r.boolean("qkv_bias", true);
      c.attnOutBias = false;
      if (r.has("layer_types"))
        for (bool s : parseLayerTypes(j, r, c.nLayer))
          if (s) r.fail("layer_types", "with sliding_attention layers is not supported");
      c.dExpert = r.positive("moe_intermediate_size", 1408);
      c.dShared = c.expertCount > 0 ? r.positive("shared_expert_intermediate_size", 5632) : 0;
      // Qwen2MoeDecoderLayer: MoE unless listed in mlp_only_layers, and only every decoder_sparse_step-th layer.
      const int step = r.positive("decoder_sparse_step", 1);
      std::vector<bool> only(static_cast<size_t>(c.nLayer), false);
      if (r.has("mlp_only_layers")) {
        const auto& list = j["mlp_only_layers"];
        if (!list.is_array()) r.fail("mlp_only_layers", "must be a list of layer indices");
        for (const auto& e : list) {
          if (!e.is_number_integer() ||
              (e.is_number_unsigned() ? e.get<unsigned long long>() >= unsigned(c.nLayer)
                                      : (e.get<long long>() < 0 || e.get<long long>() >= c.nLayer)))
            r.fail("mlp_only_layers",
                   "entry " + e.dump() + " is not a layer index in [0, " + std::to_string(c.nLayer) + ")");
          only[e.get<size_t>()] = true;
        }
      }
      for (int L = 0; L < c.nLayer; ++L) c.layerMoe[L] = c.expertCount > 0 && !only[L] && (L + 1) % step == 0;
    }
  } else if (t == "t5") {
    // T5Config / T5ForConditionalGeneration: pre-norm blocks with T5LayerNorm
    // (RMS, no bias), no 1/sqrt(d_kv) score scaling, relative position bias.
    c.arch = Arch::T5;
    c.encoderDecoder = true;
    c.causal = false;  // the encoder is bidirectional; the decoder's causality is per stack (model/t5.cpp)
    c.nLayer = r.positive("num_layers", 6);
    c.nDecoderLayer = r.positive("num_decoder_layers", c.nLayer);
    c.dModel = r.positive("d_model", 512);
    c.headDim = r.positive("d_kv", 64);
    c.nHead = r.positive("num_heads", 8);
    // q/k/v project to num_heads x d_kv, which need not be d_model: bound the product (64-bit check).
    if (static_cast<int64_t>(c.nHead) * c.headDim > (int64_t(1) << 30))
      r.fail("d_kv", "x num_heads must be <= 2^30, got " + std::to_string(c.headDim) + " x " + std::to_string(c.nHead));
    c.dFF = r.positive("d_ff", 2048);
    c.vocab = r.positive("vocab_size", 32128);
    c.norm = NormKind::RMSNorm;
    c.normEps = r.positiveNumber("layer_norm_epsilon", 1e-6);
    c.pos = PosKind::Relative;
    c.attnScale = 1.0;
    c.relBuckets = r.positive("relative_attention_num_buckets", 32);
    if (c.relBuckets < 4) r.fail("relative_attention_num_buckets", "must be >= 4, got " + std::to_string(c.relBuckets));
    // The log-spaced buckets divide by log(max_distance / max_exact), max_exact
    // being num_buckets / 2 in the (causal) decoder.
    c.relMaxDistance = r.positive("relative_attention_max_distance", 128);
    if (c.relMaxDistance <= c.relBuckets / 2)
      r.fail("relative_attention_max_distance", "must be > relative_attention_num_buckets / 2 (" +
                                                    std::to_string(c.relBuckets / 2) + "), got " +
                                                    std::to_string(c.relMaxDistance));
    // feed_forward_proj is "ACT" or "gated-ACT"; "gated-gelu" means gelu_new (backward compatibility).
    const std::string proj = r.string("feed_forward_proj", "relu");
    const auto dash = proj.find('-');
    std::string act = proj;
    c.gated = false;
    if (dash != std::string::npos) {
      if (proj.substr(0, dash) != "gated" || proj.find('-', dash + 1) != std::string::npos)
        r.fail("feed_forward_proj",
               "must be ACT or gated-ACT (e.g. relu, gated-gelu), got " + j["feed_forward_proj"].dump());
      act = proj.substr(dash + 1);
      c.gated = true;
    }
    if (proj == "gated-gelu") act = "gelu_new";
    std::string actKey = "feed_forward_proj";
    if (r.has("dense_act_fn")) act = r.string("dense_act_fn", act), actKey = "dense_act_fn";
    c.act = activationFromName(act, ctx + ": key '" + actKey + "'");
    c.gated = r.boolean("is_gated_act", c.gated);
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
    c.headScale = c.tiedEmbeddings ? 1.0 / std::sqrt(static_cast<double>(c.dModel)) : 1.0;
    c.decoderStartId = r.integer("decoder_start_token_id", 0);
    if (c.decoderStartId >= c.vocab)
      r.fail("decoder_start_token_id",
             "must be < vocab_size (" + std::to_string(c.vocab) + "), got " + std::to_string(c.decoderStartId));
  } else {  // bert
    c.arch = Arch::Bert;
    c.nLayer = r.positive("num_hidden_layers");
    c.dModel = r.positive("hidden_size");
    c.nHead = r.positive("num_attention_heads");
    c.dFF = r.positive("intermediate_size");
    c.vocab = r.positive("vocab_size");
    c.maxPos = r.positive("max_position_embeddings", 512);
    c.typeVocab = r.integer("type_vocab_size", 2);
    c.act = activationFromName(r.string("hidden_act", "gelu"), ctx + ": key 'hidden_act'");
    c.normEps = r.positiveNumber("layer_norm_eps", 1e-12);
    c.placement = NormPlacement::Post;
    c.finalNorm = false;
    c.causal = false;
    c.attnBias = c.attnOutBias = c.ffnBias = true;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
  }
  c.preNorm = c.placement == NormPlacement::Pre;
  if (c.nKVHead == 0) c.nKVHead = c.nHead;
  if (c.embedProjDim == 0) c.embedProjDim = c.dModel;
  if (c.headDim == 0) {
    if (c.dModel % c.nHead)
      throw FormatError(ctx + ": hidden size " + std::to_string(c.dModel) + " is not divisible by the head count " +
                        std::to_string(c.nHead));
    c.headDim = c.dModel / c.nHead;
  }
  if (c.nHead % c.nKVHead)
    throw FormatError(ctx + ": key 'num_key_value_heads' (" + std::to_string(c.nKVHead) +
                      ") must divide num_attention_heads (" + std::to_string(c.nHead) + ")");
  if (c.pos == PosKind::Rope) {
    c.rope = parseRope(j, r, c.ropeTheta, c.headDim, c.maxPos);
    c.ropeLocal = c.rope;
    if (c.arch == Arch::Gemma3) {
      // Gemma3: sliding layers use the default RoPE on rope_local_base_freq; rope_scaling is global-only.
      c.ropeLocal = RopeConfig{};
      c.ropeLocal.theta = r.positiveNumber("rope_local_base_freq", 10000.0);
      c.ropeLocal.dim = c.rope.dim;
      c.ropeLocal.maxPos = c.maxPos;
    }
  }
  if (static_cast<int64_t>(c.vocab) * std::max(c.dModel, c.embedProjDim) > (int64_t(1) << 34))
    throw FormatError(ctx + ": key 'vocab_size' x hidden size is beyond what the engine can hold");
  return c;
}

ModelConfig ModelConfig::fromFile(const std::filesystem::path& path) {
  // readJsonFile: regular files only, depth limit, duplicate keys refused.
  return fromJson(readJsonFile(path), path.string());
}

}  // namespace moefy
