#include "analysis/model/config.h"

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"

namespace moefy {

const char* archName(Arch a) {
  switch (a) {
    case Arch::GPT2: return "gpt2";
    case Arch::Llama: return "llama";
    case Arch::Mistral: return "mistral";
    case Arch::Qwen2: return "qwen2";
    case Arch::OPT: return "opt";
    case Arch::Bert: return "bert";
  }
  return "?";
}

const char* activationName(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::GELUTanh: return "gelu_new";
    case Activation::SiLU: return "silu";
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

// Typed accessors that name the key in their error.
struct Reader {
  const nlohmann::json& j;
  std::string ctx;
  int integer(const char* key) const {
    if (!j.contains(key)) throw FormatError(ctx + ": missing key '" + key + "'");
    if (!j[key].is_number_integer() || j[key].get<long long>() < 0 || j[key].get<long long>() > (1ll << 30))
      throw FormatError(ctx + ": key '" + key + "' must be a non-negative integer");
    return j[key].get<int>();
  }
  int integer(const char* key, int fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    return integer(key);
  }
  double number(const char* key, double fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_number()) throw FormatError(ctx + ": key '" + key + "' must be a number");
    return j[key].get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_boolean()) throw FormatError(ctx + ": key '" + key + "' must be true or false");
    return j[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_string()) throw FormatError(ctx + ": key '" + key + "' must be a string");
    return j[key].get<std::string>();
  }
};

}  // namespace

ModelConfig ModelConfig::fromJson(const nlohmann::json& j, const std::string& ctx) {
  if (!j.is_object()) throw FormatError(ctx + ": not a JSON object");
  Reader r{j, ctx};
  ModelConfig c;
  c.raw = j;
  c.modelType = r.string("model_type", "");
  if (c.modelType.empty()) throw FormatError(ctx + ": missing key 'model_type'");
  const std::string& t = c.modelType;
  if (t == "gpt2") {
    c.arch = Arch::GPT2;
    c.nLayer = r.integer("n_layer");
    c.dModel = r.integer("n_embd");
    c.nHead = r.integer("n_head");
    c.dFF = r.integer("n_inner", 4 * c.dModel);
    c.vocab = r.integer("vocab_size");
    c.maxPos = r.integer("n_positions", 1024);
    c.act = activationFromName(r.string("activation_function", "gelu_new"), ctx);
    c.normEps = r.number("layer_norm_epsilon", 1e-5);
    c.attnBias = c.attnOutBias = c.ffnBias = true;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
  } else if (t == "llama" || t == "mistral" || t == "qwen2") {
    c.arch = t == "llama" ? Arch::Llama : (t == "mistral" ? Arch::Mistral : Arch::Qwen2);
    c.nLayer = r.integer("num_hidden_layers");
    c.dModel = r.integer("hidden_size");
    c.nHead = r.integer("num_attention_heads");
    c.nKVHead = r.integer("num_key_value_heads", c.nHead);
    c.dFF = r.integer("intermediate_size");
    c.vocab = r.integer("vocab_size");
    c.maxPos = r.integer("max_position_embeddings", 2048);
    c.act = activationFromName(r.string("hidden_act", "silu"), ctx);
    c.gated = true;
    c.norm = NormKind::RMSNorm;
    c.normEps = r.number("rms_norm_eps", 1e-6);
    c.pos = PosKind::Rope;
    c.ropeTheta = r.number("rope_theta", 10000.0);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      throw FormatError(ctx + ": rope_scaling is not supported");
    c.attnBias = c.arch == Arch::Qwen2 ? true : r.boolean("attention_bias", false);
    c.attnOutBias = c.arch == Arch::Qwen2 ? false : c.attnBias;
    c.ffnBias = r.boolean("mlp_bias", false);
    if (c.ffnBias) throw FormatError(ctx + ": mlp_bias is not supported");
    // HF's LlamaConfig, MistralConfig and Qwen2Config all default to untied heads.
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", false);
    c.headDim = r.integer("head_dim", 0);
    if (c.arch == Arch::Mistral) c.slidingWindow = r.integer("sliding_window", 0);
    if (c.arch == Arch::Qwen2 && r.boolean("use_sliding_window", false))
      throw FormatError(ctx + ": use_sliding_window=true is not supported for qwen2");
  } else if (t == "opt") {
    c.arch = Arch::OPT;
    c.nLayer = r.integer("num_hidden_layers");
    c.dModel = r.integer("hidden_size");
    c.nHead = r.integer("num_attention_heads");
    c.dFF = r.integer("ffn_dim");
    c.vocab = r.integer("vocab_size");
    c.maxPos = r.integer("max_position_embeddings", 2048);
    c.posOffset = 2;
    c.act = activationFromName(r.string("activation_function", "relu"), ctx);
    c.preNorm = r.boolean("do_layer_norm_before", true);
    c.finalNorm = c.preNorm && !r.boolean("_remove_final_layer_norm", false);
    c.embedProjDim = r.integer("word_embed_proj_dim", c.dModel);
    bool bias = r.boolean("enable_bias", true);
    c.attnBias = c.attnOutBias = c.ffnBias = bias;
    if (!r.boolean("layer_norm_elementwise_affine", true))
      throw FormatError(ctx + ": layer_norm_elementwise_affine=false is not supported");
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
  } else if (t == "bert") {
    c.arch = Arch::Bert;
    c.nLayer = r.integer("num_hidden_layers");
    c.dModel = r.integer("hidden_size");
    c.nHead = r.integer("num_attention_heads");
    c.dFF = r.integer("intermediate_size");
    c.vocab = r.integer("vocab_size");
    c.maxPos = r.integer("max_position_embeddings", 512);
    c.typeVocab = r.integer("type_vocab_size", 2);
    c.act = activationFromName(r.string("hidden_act", "gelu"), ctx);
    c.normEps = r.number("layer_norm_eps", 1e-12);
    c.preNorm = false;
    c.finalNorm = false;
    c.causal = false;
    c.attnBias = c.attnOutBias = c.ffnBias = true;
    c.tiedEmbeddings = r.boolean("tie_word_embeddings", true);
    std::string pe = r.string("position_embedding_type", "absolute");
    if (pe != "absolute") throw FormatError(ctx + ": position_embedding_type '" + pe + "' is not supported");
  } else {
    throw FormatError(ctx + ": unsupported model_type '" + t + "' (supported: gpt2, llama, mistral, qwen2, opt, bert)");
  }
  if (c.nKVHead == 0) c.nKVHead = c.nHead;
  if (c.embedProjDim == 0) c.embedProjDim = c.dModel;
  if (c.nLayer <= 0 || c.dModel <= 0 || c.nHead <= 0 || c.dFF <= 0 || c.vocab <= 0)
    throw FormatError(ctx + ": layer count, widths, heads and vocab_size must be positive");
  if (c.headDim == 0) {
    if (c.dModel % c.nHead) throw FormatError(ctx + ": hidden size " + std::to_string(c.dModel) +
                                              " is not divisible by the head count " + std::to_string(c.nHead));
    c.headDim = c.dModel / c.nHead;
  }
  if (c.nHead % c.nKVHead)
    throw FormatError(ctx + ": num_attention_heads is not a multiple of num_key_value_heads");
  if (c.pos == PosKind::Rope && c.headDim % 2) throw FormatError(ctx + ": RoPE needs an even head dimension");
  return c;
}

ModelConfig ModelConfig::fromFile(const std::filesystem::path& path) {
  // readJsonFile: regular files only, depth limit, duplicate keys refused.
  return fromJson(readJsonFile(path), path.string());
}

}  // namespace moefy
