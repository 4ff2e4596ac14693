#include "analysis/model/arch.h"

namespace moefy {

namespace {

// clang-format off
const ArchTable kGpt2{Arch::GPT2, {"transformer.", ""}, {
  {Role::TokEmbd, "wte.weight", false, false},
  {Role::PosEmbd, "wpe.weight", false, false},
  {Role::OutNorm, "ln_f.weight", false, false},
  {Role::OutNormB, "ln_f.bias", false, false},
  {Role::LmHead, "lm_head.weight", false, false},
  {Role::AttnNorm, "h.{L}.ln_1.weight", true, false},
  {Role::AttnNormB, "h.{L}.ln_1.bias", true, false},
  {Role::AttnQKV, "h.{L}.attn.c_attn.weight", true, true},
  {Role::AttnQKVB, "h.{L}.attn.c_attn.bias", true, false},
  {Role::AttnOut, "h.{L}.attn.c_proj.weight", true, true},
  {Role::AttnOutB, "h.{L}.attn.c_proj.bias", true, false},
  {Role::FfnNorm, "h.{L}.ln_2.weight", true, false},
  {Role::FfnNormB, "h.{L}.ln_2.bias", true, false},
  {Role::FfnUp, "h.{L}.mlp.c_fc.weight", true, true},
  {Role::FfnUpB, "h.{L}.mlp.c_fc.bias", true, false},
  {Role::FfnDown, "h.{L}.mlp.c_proj.weight", true, true},
  {Role::FfnDownB, "h.{L}.mlp.c_proj.bias", true, false},
}, {"h.{L}.attn.bias", "h.{L}.attn.masked_bias"}};

// The llama-style decoder rows; `layout` picks the norm rows of the family.
enum class NormRows { Llama, Sandwich, Olmo2 };
std::vector<TensorRow> decoderRows(NormRows layout, bool qkNorm) {
  std::vector<TensorRow> v = {
    {Role::TokEmbd, "model.embed_tokens.weight", false, false},
    {Role::OutNorm, "model.norm.weight", false, false},
    {Role::LmHead, "lm_head.weight", false, false},
    {Role::AttnQ, "model.layers.{L}.self_attn.q_proj.weight", true, false},
    {Role::AttnQB, "model.layers.{L}.self_attn.q_proj.bias", true, false},
    {Role::AttnK, "model.layers.{L}.self_attn.k_proj.weight", true, false},
    {Role::AttnKB, "model.layers.{L}.self_attn.k_proj.bias", true, false},
    {Role::AttnV, "model.layers.{L}.self_attn.v_proj.weight", true, false},
    {Role::AttnVB, "model.layers.{L}.self_attn.v_proj.bias", true, false},
    {Role::AttnOut, "model.layers.{L}.self_attn.o_proj.weight", true, false},
    {Role::AttnOutB, "model.layers.{L}.self_attn.o_proj.bias", true, false},
    {Role::FfnGate, "model.layers.{L}.mlp.gate_proj.weight", true, false},
    {Role::FfnUp, "model.layers.{L}.mlp.up_proj.weight", true, false},
    {Role::FfnDown, "model.layers.{L}.mlp.down_proj.weight", true, false},
  };
  switch (layout) {
    case NormRows::Llama:
      v.push_back({Role::AttnNorm, "model.layers.{L}.input_layernorm.weight", true, false});
      v.push_back({Role::FfnNorm, "model.layers.{L}.post_attention_layernorm.weight", true, false});
      break;
    case NormRows::Sandwich:  // Gemma2/3: post_attention_layernorm is the attention output's norm
      v.push_back({Role::AttnNorm, "model.layers.{L}.input_layernorm.weight", true, false});
      v.push_back({Role::AttnPostNorm, "model.layers.{L}.post_attention_layernorm.weight", true, false});
      v.push_back({Role::FfnNorm, "model.layers.{L}.pre_feedforward_layernorm.weight", true, false});
      v.push_back({Role::FfnPostNorm, "model.layers.{L}.post_feedforward_layernorm.weight", true, false});
      break;
    case NormRows::Olmo2:
      v.push_back({Role::AttnPostNorm, "model.layers.{L}.post_attention_layernorm.weight", true, false});
      v.push_back({Role::FfnPostNorm, "model.layers.{L}.post_feedforward_layernorm.weight", true, false});
      break;
  }
  if (qkNorm) {
    v.push_back({Role::AttnQNorm, "model.layers.{L}.self_attn.q_norm.weight", true, false});
    v.push_back({Role::AttnKNorm, "model.layers.{L}.self_attn.k_norm.weight", true, false});
  }
  return v;
}
const std::vector<std::string> kRotary = {"model.layers.{L}.self_attn.rotary_emb.inv_freq"};
const ArchTable kLlama{Arch::Llama, {""}, decoderRows(NormRows::Llama, false), kRotary};
const ArchTable kMistral{Arch::Mistral, {""}, decoderRows(NormRows::Llama, false), kRotary};
const ArchTable kQwen2{Arch::Qwen2, {""}, decoderRows(NormRows::Llama, false), kRotary};
const ArchTable kQwen3{Arch::Qwen3, {""}, decoderRows(NormRows::Llama, true), kRotary};
const ArchTable kGemma{Arch::Gemma, {""}, decoderRows(NormRows::Llama, false), kRotary};
const ArchTable kGemma2{Arch::Gemma2, {""}, decoderRows(NormRows::Sandwich, false), kRotary};
const ArchTable kGemma3{Arch::Gemma3, {""}, decoderRows(NormRows::Sandwich, true), kRotary};
const ArchTable kOlmo2{Arch::Olmo2, {""}, decoderRows(NormRows::Olmo2, true), kRotary};
// Phi-3 stores q/k/v and gate/up fused; the split parts take llama's names.
const ArchTable kPhi3{Arch::Phi3, {""}, decoderRows(NormRows::Llama, false), kRotary, {
  {"model.layers.{L}.self_attn.qkv_proj.weight", {Role::AttnQ, Role::AttnK, Role::AttnV}},
  {"model.layers.{L}.mlp.gate_up_proj.weight", {Role::FfnGate, Role::FfnUp}},
}};

const ArchTable kOpt{Arch::OPT, {"model.", ""}, {
  {Role::TokEmbd, "decoder.embed_tokens.weight", false, false},
  {Role::PosEmbd, "decoder.embed_positions.weight", false, false},
  {Role::ProjIn, "decoder.project_in.weight", false, false},
  {Role::ProjOut, "decoder.project_out.weight", false, false},
  {Role::OutNorm, "decoder.final_layer_norm.weight", false, false},
  {Role::OutNormB, "decoder.final_layer_norm.bias", false, false},
  {Role::LmHead, "lm_head.weight", false, false},
  {Role::AttnNorm, "decoder.layers.{L}.self_attn_layer_norm.weight", true, false},
  {Role::AttnNormB, "decoder.layers.{L}.self_attn_layer_norm.bias", true, false},
  {Role::AttnQ, "decoder.layers.{L}.self_attn.q_proj.weight", true, false},
  {Role::AttnQB, "decoder.layers.{L}.self_attn.q_proj.bias", true, false},
  {Role::AttnK, "decoder.layers.{L}.self_attn.k_proj.weight", true, false},
  {Role::AttnKB, "decoder.layers.{L}.self_attn.k_proj.bias", true, false},
  {Role::AttnV, "decoder.layers.{L}.self_attn.v_proj.weight", true, false},
  {Role::AttnVB, "decoder.layers.{L}.self_attn.v_proj.bias", true, false},
  {Role::AttnOut, "decoder.layers.{L}.self_attn.out_proj.weight", true, false},
  {Role::AttnOutB, "decoder.layers.{L}.self_attn.out_proj.bias", true, false},
  {Role::FfnNorm, "decoder.layers.{L}.final_layer_norm.weight", true, false},
  {Role::FfnNormB, "decoder.layers.{L}.final_layer_norm.bias", true, false},
  {Role::FfnUp, "decoder.layers.{L}.fc1.weight", true, false},
  {Role::FfnUpB, "decoder.layers.{L}.fc1.bias", true, false},
  {Role::FfnDown, "decoder.layers.{L}.fc2.weight", true, false},
  {Role::FfnDownB, "decoder.layers.{L}.fc2.bias", true, false},
}, {}};

const ArchTable kBert{Arch::Bert, {"bert.", ""}, {
  {Role::TokEmbd, "embeddings.word_embeddings.weight", false, false},
  {Role::PosEmbd, "embeddings.position_embeddings.weight", false, false},
  {Role::TypeEmbd, "embeddings.token_type_embeddings.weight", false, false},
  {Role::EmbNorm, "embeddings.LayerNorm.weight", false, false},
  {Role::EmbNormB, "embeddings.LayerNorm.bias", false, false},
  {Role::HeadDense, "cls.predictions.transform.dense.weight", false, false},
  {Role::HeadDenseB, "cls.predictions.transform.dense.bias", false, false},
  {Role::HeadNorm, "cls.predictions.transform.LayerNorm.weight", false, false},
  {Role::HeadNormB, "cls.predictions.transform.LayerNorm.bias", false, false},
  {Role::LmHead, "cls.predictions.decoder.weight", false, false},
  {Role::LmHeadB, "cls.predictions.bias", false, false},
  {Role::AttnQ, "encoder.layer.{L}.attention.self.query.weight", true, false},
  {Role::AttnQB, "encoder.layer.{L}.attention.self.query.bias", true, false},
  {Role::AttnK, "encoder.layer.{L}.attention.self.key.weight", true, false},
  {Role::AttnKB, "encoder.layer.{L}.attention.self.key.bias", true, false},
  {Role::AttnV, "encoder.layer.{L}.attention.self.value.weight", true, false},
  {Role::AttnVB, "encoder.layer.{L}.attention.self.value.bias", true, false},
  {Role::AttnOut, "encoder.layer.{L}.attention.output.dense.weight", true, false},
  {Role::AttnOutB, "encoder.layer.{L}.attention.output.dense.bias", true, false},
  {Role::AttnNorm, "encoder.layer.{L}.attention.output.LayerNorm.weight", true, false},
  {Role::AttnNormB, "encoder.layer.{L}.attention.output.LayerNorm.bias", true, false},
  {Role::FfnUp, "encoder.layer.{L}.intermediate.dense.weight", true, false},
  {Role::FfnUpB, "encoder.layer.{L}.intermediate.dense.bias", true, false},
  {Role::FfnDown, "encoder.layer.{L}.output.dense.weight", true, false},
  {Role::FfnDownB, "encoder.layer.{L}.output.dense.bias", true, false},
  {Role::FfnNorm, "encoder.layer.{L}.output.LayerNorm.weight", true, false},
  {Role::FfnNormB, "encoder.layer.{L}.output.LayerNorm.bias", true, false},
}, {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias", "cls.predictions.decoder.bias",
    "cls.seq_relationship.weight", "cls.seq_relationship.bias"}};

// T5ForConditionalGeneration. Blocks hold a list of sub-layers: layer.0 is
// self-attention, the decoder's layer.1 is cross-attention (EncDecAttention),
// the last is the FFN (DenseReluDense, whatever its activation). Only block 0
// of each stack has relative_attention_bias; the later blocks reuse it.
// Gated FFNs (v1.1 / FLAN): act(wi_0 x) * (wi_1 x), so wi_0 is the gate and
// wi_1 the up projection.
constexpr SiteStack kEnc = SiteStack::Encoder;
constexpr SiteStack kDec = SiteStack::Decoder;
std::vector<TensorRow> t5Rows(bool gated) {
  std::vector<TensorRow> v = {
    {Role::TokEmbd, "shared.weight", false, false},
    {Role::LmHead, "lm_head.weight", false, false},
    {Role::RelBias, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", false, false, kEnc},
    {Role::OutNorm, "encoder.final_layer_norm.weight", false, false, kEnc},
    {Role::AttnNorm, "encoder.block.{L}.layer.0.layer_norm.weight", true, false, kEnc},
    {Role::AttnQ, "encoder.block.{L}.layer.0.SelfAttention.q.weight", true, false, kEnc},
    {Role::AttnK, "encoder.block.{L}.layer.0.SelfAttention.k.weight", true, false, kEnc},
    {Role::AttnV, "encoder.block.{L}.layer.0.SelfAttention.v.weight", true, false, kEnc},
    {Role::AttnOut, "encoder.block.{L}.layer.0.SelfAttention.o.weight", true, false, kEnc},
    {Role::FfnNorm, "encoder.block.{L}.layer.1.layer_norm.weight", true, false, kEnc},
    {Role::FfnDown, "encoder.block.{L}.layer.1.DenseReluDense.wo.weight", true, false, kEnc},
    {Role::RelBias, "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", false, false, kDec},
    {Role::OutNorm, "decoder.final_layer_norm.weight", false, false, kDec},
    {Role::AttnNorm, "decoder.block.{L}.layer.0.layer_norm.weight", true, false, kDec},
    {Role::AttnQ, "decoder.block.{L}.layer.0.SelfAttention.q.weight", true, false, kDec},
    {Role::AttnK, "decoder.block.{L}.layer.0.SelfAttention.k.weight", true, false, kDec},
    {Role::AttnV, "decoder.block.{L}.layer.0.SelfAttention.v.weight", true, false, kDec},
    {Role::AttnOut, "decoder.block.{L}.layer.0.SelfAttention.o.weight", true, false, kDec},
    {Role::CrossNorm, "decoder.block.{L}.layer.1.layer_norm.weight", true, false, kDec},
    {Role::CrossQ, "decoder.block.{L}.layer.1.EncDecAttention.q.weight", true, false, kDec},
    {Role::CrossK, "decoder.block.{L}.layer.1.EncDecAttention.k.weight", true, false, kDec},
    {Role::CrossV, "decoder.block.{L}.layer.1.EncDecAttention.v.weight", true, false, kDec},
    {Role::CrossOut, "decoder.block.{L}.layer.1.EncDecAttention.o.weight", true, false, kDec},
    {Role::FfnNorm, "decoder.block.{L}.layer.2.layer_norm.weight", true, false, kDec},
    {Role::FfnDown, "decoder.block.{L}.layer.2.DenseReluDense.wo.weight", true, false, kDec},
  };
  if (gated) {
    v.push_back({Role::FfnGate, "encoder.block.{L}.layer.1.DenseReluDense.wi_0.weight", true, false, kEnc});
    v.push_back({Role::FfnUp, "encoder.block.{L}.layer.1.DenseReluDense.wi_1.weight", true, false, kEnc});
    v.push_back({Role::FfnGate, "decoder.block.{L}.layer.2.DenseReluDense.wi_0.weight", true, false, kDec});
    v.push_back({Role::FfnUp, "decoder.block.{L}.layer.2.DenseReluDense.wi_1.weight", true, false, kDec});
  } else {
    v.push_back({Role::FfnUp, "encoder.block.{L}.layer.1.DenseReluDense.wi.weight", true, false, kEnc});
    v.push_back({Role::FfnUp, "decoder.block.{L}.layer.2.DenseReluDense.wi.weight", true, false, kDec});
  }
  return v;
}
// HF's _keys_to_ignore_on_load_unexpected: old checkpoints carry a cross-attention
// relative bias that the model never uses.
const std::vector<std::string> kT5Ignorable = {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"};
// The stacks' embed_tokens are shared.weight; save_pretrained may write them or not.
const std::vector<AliasRow> kT5Aliases = {{Role::TokEmbd, "encoder.embed_tokens.weight"},
                                          {Role::TokEmbd, "decoder.embed_tokens.weight"}};
// Native MoE decoders: llama rows (+ OLMoE's q/k norms over the whole
// projection) whose MLP is a router plus per-expert gated FFNs. Mixtral
// (MixtralSparseMoeBlock): block_sparse_moe.gate, experts.{E}.w1 (gate) / w3
// (up) / w2 (down). Qwen2-MoE and OLMoE: mlp.gate, mlp.experts.{E}.gate_proj /
// up_proj / down_proj; Qwen2-MoE adds mlp.shared_expert.* and
// mlp.shared_expert_gate, and keeps the dense mlp.*_proj rows for its
// mlp_only_layers (roleInLayer decides which a block has).
enum class MoeRows { Mixtral, Qwen2Moe, Olmoe };
std::vector<TensorRow> moeRows(MoeRows kind) {
  std::vector<TensorRow> v;
  for (const auto& row : decoderRows(NormRows::Llama, kind == MoeRows::Olmoe)) {
    const bool dense = row.role == Role::FfnGate || row.role == Role::FfnUp || row.role == Role::FfnDown;
    if (!dense || kind == MoeRows::Qwen2Moe) v.push_back(row);
  }
  constexpr SiteStack kOne = SiteStack::Single;
  if (kind == MoeRows::Mixtral) {
    v.push_back({Role::MoeRouter, "model.layers.{L}.block_sparse_moe.gate.weight", true, false});
    v.push_back({Role::ExpGate, "model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight", true, false, kOne, true});
    v.push_back({Role::ExpUp, "model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight", true, false, kOne, true});
    v.push_back({Role::ExpDown, "model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight", true, false, kOne, true});
    return v;
  }
  v.push_back({Role::MoeRouter, "model.layers.{L}.mlp.gate.weight", true, false});
  v.push_back({Role::ExpGate, "model.layers.{L}.mlp.experts.{E}.gate_proj.weight", true, false, kOne, true});
  v.push_back({Role::ExpUp, "model.layers.{L}.mlp.experts.{E}.up_proj.weight", true, false, kOne, true});
  v.push_back({Role::ExpDown, "model.layers.{L}.mlp.experts.{E}.down_proj.weight", true, false, kOne, true});
  if (kind == MoeRows::Qwen2Moe) {
    v.push_back({Role::SharedGate, "model.layers.{L}.mlp.shared_expert.gate_proj.weight", true, false});
    v.push_back({Role::SharedUp, "model.layers.{L}.mlp.shared_expert.up_proj.weight", true, false});
    v.push_back({Role::SharedDown, "model.layers.{L}.mlp.shared_expert.down_proj.weight", true, false});
    v.push_back({Role::SharedRouter, "model.layers.{L}.mlp.shared_expert_gate.weight", true, false});
  }
  return v;
}
const ArchTable kMixtral{Arch::Mixtral, {""}, moeRows(MoeRows::Mixtral), kRotary};
const ArchTable kQwen2Moe{Arch::Qwen2Moe, {""}, moeRows(MoeRows::Qwen2Moe), kRotary};
const ArchTable kOlmoe{Arch::Olmoe, {""}, moeRows(MoeRows::Olmoe), kRotary};

const ArchTable kT5{Arch::T5, {""}, t5Rows(false), kT5Ignorable, {}, kT5Aliases};
const ArchTable kT5Gated{Arch::T5, {""}, t5Rows(true), kT5Ignorable, {}, kT5Aliases};
// clang-format on

}  // namespace

const ArchTable& archTable(Arch arch) {
  switch (arch) {
    case Arch::GPT2: return kGpt2;
    case Arch::Llama: return kLlama;
    case Arch::Mistral: return kMistral;
    case Arch::Qwen2: return kQwen2;
    case Arch::OPT: return kOpt;
    case Arch::Bert: return kBert;
    case Arch::Qwen3: return kQwen3;
    case Arch::Gemma: return kGemma;
    case Arch::Gemma2: return kGemma2;
    case Arch::Gemma3: return kGemma3;
    case Arch::Phi3: return kPhi3;
    case Arch::Olmo2: return kOlmo2;
    case Arch::T5:
      return kT5;
    case Arch::Mixtral:
      return kMixtral;
    case Arch::Qwen2Moe:
      return kQwen2Moe;
    case Arch::Olmoe:
      return kOlmoe;
  }
  return kGpt2;
}

const ArchTable& archTable(const ModelConfig& c) {
  if (c.arch == Arch::T5 && c.gated) return kT5Gated;
  return archTable(c.arch);
}

int rowLayerCount(const TensorRow& row, const ModelConfig& c) { return row.perLayer ? c.layerCount(row.stack) : 1; }

bool roleIsHead(Role r) {
  return r == Role::LmHead || r == Role::LmHeadB || r == Role::HeadDense || r == Role::HeadDenseB ||
         r == Role::HeadNorm || r == Role::HeadNormB;
}

const char* roleName(Role r) {
  // In Role's order, several per line.
  // clang-format off
  static const char* names[] = {
      "tok_embd", "pos_embd", "type_embd", "emb_norm", "emb_norm_b", "proj_in", "proj_out", "out_norm",
      "out_norm_b", "lm_head", "lm_head_b", "head_dense", "head_dense_b", "head_norm", "head_norm_b",
      "attn_norm", "attn_norm_b", "attn_qkv", "attn_qkv_b", "attn_q", "attn_q_b", "attn_k", "attn_k_b",
      "attn_v", "attn_v_b", "attn_out", "attn_out_b", "ffn_norm", "ffn_norm_b", "ffn_up", "ffn_up_b",
      "ffn_gate", "ffn_down", "ffn_down_b", "attn_post_norm", "ffn_post_norm", "attn_q_norm", "attn_k_norm",
      "rel_bias", "cross_norm", "cross_q", "cross_k", "cross_v", "cross_out", "moe_router", "exp_gate", "exp_up",
      "exp_down", "shared_gate", "shared_up", "shared_down", "shared_router"};
  // clang-format on
  return names[static_cast<int>(r)];
}

std::string expandPattern(const std::string& pattern, int layer, int expert) {
  std::string s = pattern;
  auto p = s.find("{L}");
  if (p != std::string::npos) s.replace(p, 3, std::to_string(layer));
  if (expert >= 0 && (p = s.find("{E}")) != std::string::npos) s.replace(p, 3, std::to_string(expert));
  return s;
}

bool roleInLayer(Role r, const ModelConfig& c, int layer) {
  switch (r) {
    case Role::FfnUp:
    case Role::FfnUpB:
    case Role::FfnGate:
    case Role::FfnDown:
    case Role::FfnDownB:
      return !c.moeLayer(layer);
    case Role::MoeRouter:
    case Role::ExpGate:
    case Role::ExpUp:
    case Role::ExpDown:
    case Role::SharedGate:
    case Role::SharedUp:
    case Role::SharedDown:
    case Role::SharedRouter:
      return c.moeLayer(layer);
    default:
      return true;
  }
}

std::optional<std::vector<int64_t>> expectedShape(Role r, const ModelConfig& c) {
  using V = std::vector<int64_t>;
  const int64_t C = c.dModel, F = c.dFF, H = c.nHead * c.headDim, KV = c.nKVHead * c.headDim;
  const int64_t E = c.embedProjDim;
  const bool ln = c.norm == NormKind::LayerNorm;
  switch (r) {
    case Role::TokEmbd: return V{c.vocab, E};
    case Role::PosEmbd:
      if (c.pos != PosKind::Learned) return std::nullopt;
      return V{c.maxPos + c.posOffset, C};
    case Role::TypeEmbd: return c.typeVocab ? std::optional<V>(V{c.typeVocab, C}) : std::nullopt;
    case Role::EmbNorm:
    case Role::EmbNormB: return c.arch == Arch::Bert ? std::optional<V>(V{C}) : std::nullopt;
    case Role::ProjIn: return E != C ? std::optional<V>(V{C, E}) : std::nullopt;
    case Role::ProjOut: return E != C ? std::optional<V>(V{E, C}) : std::nullopt;
    case Role::OutNorm: return c.finalNorm ? std::optional<V>(V{C}) : std::nullopt;
    case Role::OutNormB: return c.finalNorm && ln ? std::optional<V>(V{C}) : std::nullopt;
    case Role::LmHead: return V{c.vocab, E};
    case Role::LmHeadB: return c.arch == Arch::Bert ? std::optional<V>(V{c.vocab}) : std::nullopt;
    case Role::HeadDense: return c.arch == Arch::Bert ? std::optional<V>(V{C, C}) : std::nullopt;
    case Role::HeadDenseB:
    case Role::HeadNorm:
    case Role::HeadNormB: return c.arch == Arch::Bert ? std::optional<V>(V{C}) : std::nullopt;
    case Role::AttnNorm:
    case Role::FfnNorm: return c.placement != NormPlacement::Output ? std::optional<V>(V{C}) : std::nullopt;
    case Role::AttnPostNorm:
    case Role::FfnPostNorm:
      return c.placement == NormPlacement::Sandwich || c.placement == NormPlacement::Output ? std::optional<V>(V{C})
                                                                                           : std::nullopt;
    case Role::AttnQNorm:
      if (c.qkNorm == QkNorm::None) return std::nullopt;
      return c.qkNorm == QkNorm::PerHead ? V{c.headDim} : V{H};
    case Role::AttnKNorm:
      if (c.qkNorm == QkNorm::None) return std::nullopt;
      return c.qkNorm == QkNorm::PerHead ? V{c.headDim} : V{KV};
    case Role::AttnNormB:
    case Role::FfnNormB: return ln ? std::optional<V>(V{C}) : std::nullopt;
    case Role::AttnQKV: return V{3 * C, C};
    case Role::AttnQKVB: return V{3 * C};
    case Role::AttnQ: return V{H, C};
    case Role::AttnK:
    case Role::AttnV: return V{KV, C};
    case Role::AttnQB: return c.attnBias ? std::optional<V>(V{H}) : std::nullopt;
    case Role::AttnKB:
    case Role::AttnVB: return c.attnBias ? std::optional<V>(V{KV}) : std::nullopt;
    case Role::AttnOut: return V{C, H};
    case Role::AttnOutB: return c.attnOutBias ? std::optional<V>(V{C}) : std::nullopt;
    case Role::FfnUp: return V{F, C};
    case Role::FfnUpB: return c.ffnBias ? std::optional<V>(V{F}) : std::nullopt;
    case Role::FfnGate: return c.gated ? std::optional<V>(V{F, C}) : std::nullopt;
    case Role::FfnDown: return V{C, F};
    case Role::FfnDownB: return c.ffnBias ? std::optional<V>(V{C}) : std::nullopt;
    case Role::RelBias:
      return c.pos == PosKind::Relative ? std::optional<V>(V{c.relBuckets, c.nHead}) : std::nullopt;
    case Role::CrossNorm:
      return c.encoderDecoder ? std::optional<V>(V{C}) : std::nullopt;
    case Role::CrossQ:
    case Role::CrossK:
    case Role::CrossV:
      return c.encoderDecoder ? std::optional<V>(V{H, C}) : std::nullopt;
    case Role::CrossOut:
      return c.encoderDecoder ? std::optional<V>(V{C, H}) : std::nullopt;
    case Role::MoeRouter:
      return c.expertCount > 0 ? std::optional<V>(V{c.expertCount, C}) : std::nullopt;
    case Role::ExpGate:
    case Role::ExpUp:
      return c.expertCount > 0 ? std::optional<V>(V{c.dExpert, C}) : std::nullopt;
    case Role::ExpDown:
      return c.expertCount > 0 ? std::optional<V>(V{C, c.dExpert}) : std::nullopt;
    case Role::SharedGate:
    case Role::SharedUp:
      return c.dShared > 0 ? std::optional<V>(V{c.dShared, C}) : std::nullopt;
    case Role::SharedDown:
      return c.dShared > 0 ? std::optional<V>(V{C, c.dShared}) : std::nullopt;
    case Role::SharedRouter:
      return c.dShared > 0 ? std::optional<V>(V{1, C}) : std::nullopt;
  }
  return std::nullopt;
}

}  // namespace moefy
