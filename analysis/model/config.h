#pragma once
// ModelConfig: the architecture-independent description of a checkpoint,
// parsed from a Hugging Face config.json by the architecture's adapter.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace moefy {

enum class Arch { GPT2, Llama, Mistral, Qwen2, OPT, Bert };
enum class Activation { ReLU, GELU, GELUTanh, SiLU };
enum class NormKind { LayerNorm, RMSNorm };
enum class PosKind { Learned, Rope };

const char* archName(Arch a);
const char* activationName(Activation a);
/// Parses an HF activation name (relu, gelu, gelu_new, gelu_pytorch_tanh, silu, swish).
Activation activationFromName(const std::string& name, const std::string& context);

struct ModelConfig {
  Arch arch = Arch::GPT2;
  std::string modelType;  ///< config.json "model_type"
  int nLayer = 0;
  int dModel = 0;         ///< hidden size, C
  int nHead = 0;
  int nKVHead = 0;        ///< < nHead for GQA
  int headDim = 0;
  int dFF = 0;            ///< FFN hidden width
  int vocab = 0;
  int maxPos = 0;
  int posOffset = 0;      ///< OPT's learned positions start at 2
  int typeVocab = 0;      ///< BERT token types
  int embedProjDim = 0;   ///< OPT word_embed_proj_dim (== dModel when no projection)
  Activation act = Activation::ReLU;
  bool gated = false;     ///< act(gate) * up (LLaMA family)
  NormKind norm = NormKind::LayerNorm;
  double normEps = 1e-5;
  bool preNorm = true;    ///< false: BERT, OPT-350m style post-norm
  bool finalNorm = true;  ///< norm after the last block (pre-norm models)
  PosKind pos = PosKind::Learned;
  double ropeTheta = 10000.0;
  int slidingWindow = 0;  ///< Mistral: a query sees keys with q - k < window; 0 = unlimited
  bool attnBias = false;  ///< q/k/v biases
  bool attnOutBias = false;
  bool ffnBias = false;
  bool causal = true;
  bool tiedEmbeddings = true;
  nlohmann::json raw;     ///< the full config.json, kept for export

  std::string ffnKind() const { return gated ? "gated" : "plain"; }
  /// Parses config.json of `dir`. Throws FormatError naming config.json and the key.
  static ModelConfig fromFile(const std::filesystem::path& configJson);
  static ModelConfig fromJson(const nlohmann::json& j, const std::string& context);
};

}  // namespace moefy
