#pragma once
// Model: a Hugging Face checkpoint folder loaded into the libtorch engine.
//
// Weights are memory-mapped: F32 tensors are zero-copy, read-only views into
// the file; F16/BF16 are converted to F32 once (or per use, WeightMode).
// Compute is F32 on the model's device (LoadOptions::device: the CPU unless
// asked otherwise; docs/scale.md "Device"). forward() runs in inference mode
// unless the model was made trainable.
//
// Thread-safety: forward() and the accessors are const and may run
// concurrently; setFfnOverride()/makeTrainable() must not race with them.
#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "analysis/model/arch.h"
#include "analysis/model/config.h"

namespace moefy {

class JobContext;

/// A right-padded batch of token sequences.
struct Batch {
  at::Tensor ids;      ///< [B, T] int64
  at::Tensor mask;     ///< [B, T] int64, 1 = token, 0 = padding
  at::Tensor typeIds;  ///< [B, T] int64 (BERT token types); undefined = zeros
  int64_t batchSize() const;
  int64_t seqLen() const;
};
/// Builds a right-padded batch. Throws ParameterError on empty input.
Batch makeBatch(const std::vector<std::vector<int64_t>>& sequences, int64_t padId = 0);

/// Hook points of an FFN site. FfnIn and FfnAct exist at every site; the
/// others belong to native MoE layers (Mixtral, Qwen2-MoE, OLMoE):
///  - at the layer's site blk.L: RouterLogits [B, T, E] (the router's logits,
///    before the softmax), TopkIds [B, T, k] int64 (chosen experts, most
///    probable first, as torch.topk) and TopkWeights [B, T, k] (their weights:
///    softmax probabilities, renormalised where the model does);
///    on a trainable model RouterLogits is the forward graph's own tensor
///    (a sink may keep it past the call and back-propagate a router loss
///    through it, train/router_loss.h);
///  - at an expert's site blk.L.exp.E: FfnIn [n, d_model] (before the expert
///    runs) and FfnAct [n, d_expert], input and hidden of the n tokens routed
///    to E in ascending token order, ExpertTokens [n] int64 their flat b*T+t;
///  - at the shared expert's site blk.L.shared: FfnIn [B, T, d_model], FfnAct [B, T, d_shared].
/// For a MoE layer, blk.L.ffn_in is the normed FFN input [B, T, d_model] and
/// blk.L.ffn_act is [B, T, E * d_expert]: expert e's hidden in columns
/// [e * d_expert, (e + 1) * d_expert) for the tokens routed to e, zeros
/// elsewhere (every expert's hidden in every-expert mode, HookSink::allExperts).
enum class HookPoint { FfnIn, FfnAct, RouterLogits, TopkIds, TopkWeights, ExpertTokens };
/// Canonical hook names: "blk.{L}.ffn_in", "blk.{L}.ffn_act", "blk.{L}.router_logits",
/// "blk.{L}.topk_ids", "blk.{L}.topk_weights", "blk.{L}.tokens"; "logits".
std::string hookName(int layer, HookPoint point);
/// The hook name of any FFN site: "<site>.ffn_in" / "<site>.ffn_act" / ..., e.g.
/// "enc.blk.0.ffn_act", "blk.1.exp.3.ffn_act", "blk.1.exp.3.tokens"
/// (== hookName(layer, point) for single-stack sites).
std::string hookName(const Site& site, HookPoint point);

/// Receives hook tensors during forward(). Only the layers a sink asks for are
/// captured; an unsubscribed hook costs one virtual call per layer.
class HookSink {
 public:
  virtual ~HookSink() = default;
  virtual bool wants(int layer, HookPoint point) const = 0;
  /// x is [B, T, d_model] for FfnIn and [B, T, d_ff] for FfnAct, F32, valid only
  /// during the call (copy it to keep it).
  virtual void on(int layer, HookPoint point, const at::Tensor& x) = 0;
  /// The site-keyed forms, which every forward pass calls (sites blk.L;
  /// enc.blk.L and dec.blk.L of encoder-decoder models, T then being the
  /// source or the decoder length; blk.L.exp.E and blk.L.shared of native MoE
  /// layers, with the MoE hook points). The defaults pass the FfnIn/FfnAct
  /// hooks of blk.L sites to wants()/on() and decline everything else, so a
  /// sink written for single-stack dense models sees nothing of a T5 and
  /// only blk.L.ffn_in / blk.L.ffn_act of a MoE model.
  virtual bool wantsSite(const Site& site, HookPoint point) const {
    return site.stack == SiteStack::Single && site.expert < 0 && !site.shared &&
           (point == HookPoint::FfnIn || point == HookPoint::FfnAct) && wants(site.layer, point);
  }
  virtual void onSite(const Site& site, HookPoint point, const at::Tensor& x) { on(site.layer, point, x); }
  /// Every-expert mode (the analysis of Look-into-MoEs): a native MoE layer
  /// also computes every expert's hidden for every token, and the blk.L.exp.E
  /// hooks then carry all B * T tokens (ExpertTokens = 0 .. B*T-1). Routing,
  /// the expert outputs that enter the model and so the logits are exactly
  /// those of the normal mode: the extra hiddens are computed on the side.
  virtual bool allExperts() const { return false; }
};

/// The FFN weights of one layer in nn.Linear orientation. The tensors may be
/// strided views (GPT-2's Conv1D layout is transposed); call .contiguous() to
/// own a dense copy.
struct FfnWeights {
  at::Tensor up;        ///< W1 [d_ff, d_model] (up_proj / c_fc / fc1 / intermediate)
  at::Tensor upBias;    ///< b1 [d_ff] or undefined
  at::Tensor gate;      ///< [d_ff, d_model] for gated FFNs, else undefined
  at::Tensor down;      ///< W2 [d_model, d_ff]
  at::Tensor downBias;  ///< b2 [d_model] or undefined
  Activation act = Activation::ReLU;
  bool gated() const { return gate.defined(); }
};

/// act(x) elementwise, for the FFN activations.
at::Tensor applyActivation(const at::Tensor& x, Activation act);
/// Dense FFN: x [N, d_model] -> [N, d_model]. If hidden is non-null it
/// receives the FFN hidden [N, d_ff] (the input of the down projection).
at::Tensor denseFfn(const FfnWeights& w, const at::Tensor& x, at::Tensor* hidden);

/// Replaces the dense FFN of every layer (used by MoE models).
class FfnOverride {
 public:
  virtual ~FfnOverride() = default;
  /// x [N, d_model] -> [N, d_model]; hidden as in denseFfn (zeros for skipped neurons).
  virtual at::Tensor forward(int layer, const at::Tensor& x, at::Tensor* hidden) const = 0;
  /// The FFN of any site (encoder-decoder models call this). The default
  /// handles single-stack sites through forward() and throws ParameterError
  /// for the others.
  virtual at::Tensor forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const;
  /// This override with its weights on `device` (Model::setFfnOverride calls
  /// it when the model is on a device other than the CPU; a copy, or this
  /// object when nothing has to move). The default throws ParameterError
  /// naming `--device`: an override with CPU kernels only refuses other
  /// devices rather than failing inside them.
  virtual std::shared_ptr<const FfnOverride> onDevice(c10::Device device) const;
};

/// Keys and values of the layers for incremental decoding (Model::forwardCached).
/// k[L], v[L]: [1, kv_heads, length, head_dim], after q/k norms and RoPE.
struct KvCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;  ///< positions already cached
};

/// The decoder state of incremental encoder-decoder (T5) decoding, made by
/// Model::startSeq2Seq and advanced by Model::decodeStep. As HF's
/// T5Attention with past_key_value: the cross-attention keys/values of every
/// decoder layer are projected from the encoder output once per source, the
/// self-attention keys/values are appended at each step. B is the number of
/// sequences still decoded (keepRows drops finished ones); H = num_heads,
/// D = d_kv, S = the padded source length. Not thread-safe: one cache per
/// decoding loop (several caches may decode on one Model concurrently).
struct Seq2SeqCache {
  at::Tensor crossBias;                    ///< [B, 1, 1, S] additive: 0 on source tokens, -1e30 on padding
  std::vector<at::Tensor> crossK, crossV;  ///< per decoder layer [B, H, S, D], computed once
  std::vector<at::Tensor> selfK, selfV;    ///< per decoder layer [B, H, length, D] (undefined while length is 0)
  int64_t length = 0;                      ///< decoder positions already cached
  int64_t batchSize() const { return crossBias.defined() ? crossBias.size(0) : 0; }
  /// Keeps the sequences `rows` (int64 [n] indices into the current batch, in
  /// the order given) of every tensor; the rows keep their cached positions.
  /// Throws ParameterError for an index outside [0, batchSize()).
  void keepRows(const at::Tensor& rows);
};

/// How the F16/BF16 weights of a checkpoint are held (F32 files are always
/// mapped zero-copy).
/// - Convert: every half tensor is converted to an owned F32 copy at load
///   (resident memory about 2x the file; the fastest forward).
/// - Mapped: half tensors stay views of the read-only file mapping; each use
///   (Model::t, i.e. when the forward runs that layer) converts that tensor to
///   a temporary F32 copy that is released with the layer's temporaries, so
///   the peak resident memory is about the file plus a layer's weights in
///   F32 plus the activations. The forward's results are bit-identical to
///   Convert (the same conversion, done later); each forward pays the
///   conversion again (negligible for batched forwards, about 2x per token in
///   one-token decoding of a large model).
/// - Auto: Mapped when the F32 copy of the half tensors would take more than
///   half of the memory available at load (availableMemoryBytes()), Convert
///   otherwise. The environment variable MOEFY_WEIGHTS=auto|convert|mapped
///   overrides Auto (any other value is refused naming the variable).
enum class WeightMode { Auto, Convert, Mapped };

struct LoadOptions {
  /// Do not require or load the FFN up/gate/down tensors (MoE checkpoints carry
  /// them per expert instead).
  bool skipFfn = false;
  WeightMode weights = WeightMode::Auto;
  /// Validate the checkpoint from its headers alone (`moefy inspect`): every
  /// tensor's name, shape and dtype against the architecture, as a full load
  /// does, without reading a weight (half tensors stay mapped views, no
  /// finiteness check, no fingerprint: fingerprint() is ""). The model can
  /// describe itself but must not run.
  bool headersOnly = false;
  /// Where the weights are held and the forward computes (`--device`,
  /// parseDevice() in model/device.h). A non-CPU device needs the weights
  /// converted (WeightMode::Convert; Auto becomes Convert, Mapped is refused
  /// with ParameterError): they are read and fingerprinted on the CPU, then
  /// copied to the device once. Batches may be given on any device (the
  /// forward moves ids and masks to the model's); its results and the hook
  /// tensors are on the model's device.
  c10::Device device = c10::Device(c10::kCPU);
};

class Model {
 public:
  /// Loads a checkpoint folder: config.json plus model.safetensors or shards
  /// listed in model.safetensors.index.json. Validates every tensor's presence
  /// and shape against the architecture table. Throws FormatError/IoError
  /// naming the file and tensor.
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const LoadOptions& options = {});
  /// Builds a model from named tensors (HF names, F32), e.g. freshly
  /// initialised for training. Validates like load().
  static std::unique_ptr<Model> fromTensors(const ModelConfig& config, std::map<std::string, at::Tensor> tensors,
                                            const LoadOptions& options = {});
  ~Model();

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& dir() const { return dir_; }
  /// Stored dtype of the weights ("F32", "F16", "BF16", or "mixed").
  const std::string& storedDType() const { return storedDType_; }
  int64_t parameterCount() const;
  /// A stable 16-hex-digit fingerprint of config and weights; recordings,
  /// partitions and routers carry it so mismatches are caught. It hashes
  /// every byte of every weight (and the config), computed once at load.
  const std::string& fingerprint() const { return fingerprint_; }
  /// All tensors by their full HF name, as held: F32, or the stored F16/BF16
  /// view of the file when mappedWeights() (convert with .to(at::kFloat)
  /// before arithmetic with F32 tensors).
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }
  /// True when half-precision weights stay mapped and are converted per use
  /// (WeightMode::Mapped, chosen or forced); false for F32 checkpoints.
  bool mappedWeights() const { return mapped_; }
  /// The device of the weights and of every tensor the forward creates.
  c10::Device device() const { return device_; }
  /// Full HF tensor name of a role (layer ignored for global roles); "" if unused.
  /// Encoder-decoder models name their per-stack roles with `stack`; the
  /// per-expert roles of native MoE models (ExpGate/ExpUp/ExpDown) take `expert`.
  std::string tensorName(Role role, int layer = 0, SiteStack stack = SiteStack::Single, int expert = 0) const;

  /// Logits [B, T, vocab]. Calls `hooks` for the subscribed layers.
  /// Throws ParameterError for encoder-decoder models (use forwardSeq2Seq).
  at::Tensor forward(const Batch& batch, HookSink* hooks = nullptr) const;

  // Encoder-decoder models (T5; HF modeling_t5.py T5ForConditionalGeneration),
  // implemented in model/t5.cpp. Both stacks are pre-norm blocks with
  // T5LayerNorm (RMS, no mean, no bias), attention without 1/sqrt(d_kv)
  // scaling and a relative position bias computed from block 0's
  // relative_attention_bias and reused by every block of the stack
  // (bidirectional buckets in the encoder, causal ones in the decoder). Each
  // decoder block adds cross-attention over the encoder output. Hooks go to
  // HookSink::onSite with sites enc.blk.L / dec.blk.L. All three throw
  // ParameterError for a single-stack model, ids outside the vocabulary or
  // mismatched batch sizes.

  /// Teacher-forced logits [B, T_dec, vocab] of `decoder` (the decoder input
  /// ids, starting with decoder_start_token_id) given `source`; both batches
  /// are right-padded and have the same B.
  at::Tensor forwardSeq2Seq(const Batch& source, const Batch& decoder, HookSink* hooks = nullptr) const;
  /// The encoder output [B, T_src, d_model] (after its final norm).
  at::Tensor encode(const Batch& source, HookSink* hooks = nullptr) const;
  /// The decoder's final hidden states [B, T_dec, d_model] (after its final
  /// norm, before head()), attending to `encoderOut` [B, T_src, d_model]
  /// where `sourceMask` [B, T_src] is 1.
  at::Tensor decodeHidden(const at::Tensor& encoderOut, const at::Tensor& sourceMask, const Batch& decoder,
                          HookSink* hooks = nullptr) const;
  /// Incremental decoding, step 1: encodes `source` (right-padded, its mask
  /// becomes the cross-attention mask; encoder hooks are called as in
  /// encode()) and projects the cross-attention keys/values of every decoder
  /// layer once. Throws as encode().
  Seq2SeqCache startSeq2Seq(const Batch& source, HookSink* hooks = nullptr) const;
  /// Incremental decoding, one step: runs the decoder ids `ids` [B, T] (T >= 1,
  /// no padding; B = cache.batchSize()) at decoder positions cache.length ..
  /// cache.length + T - 1, each attending to the cached positions and to the
  /// earlier ones of `ids` (HF's causal buckets of compute_bias for the query
  /// positions against keys 0 .. cache.length + T - 1), appends their
  /// self-attention keys/values and returns the final hidden states
  /// [B, T, d_model] (head() makes the logits). The arithmetic is that of
  /// decodeHidden on the whole prefix up to float rounding; the FFN override
  /// (forwardSite) and the dec.blk.L hooks run as there, with T the step's
  /// length and B the rows still in the cache. Throws ParameterError for a
  /// single-stack model, an empty or out-of-vocabulary `ids` or a batch size
  /// other than the cache's. Not thread-safe on one cache.
  at::Tensor decodeStep(const at::Tensor& ids, Seq2SeqCache& cache, HookSink* hooks = nullptr) const;
  /// Final hidden states [B, T, d_model] (after the final norm, before the head).
  at::Tensor forwardHidden(const Batch& batch, HookSink* hooks = nullptr) const;
  /// Incremental decoding of one unpadded sequence: runs `tokens` at
  /// positions cache.length .. cache.length + T - 1 attending to the cached
  /// keys, appends their keys/values to `cache` and returns the final hidden
  /// states [1, T, d_model]. Same arithmetic as forwardHidden (FFN override
  /// honoured). Throws ParameterError for ids outside the vocabulary or
  /// positions beyond learned position tables. Not thread-safe on one cache.
  at::Tensor forwardCached(const std::vector<int64_t>& tokens, KvCache& cache) const;
  /// The LM (or MLM) head: hidden [.., d_model] -> logits [.., vocab]
  /// (with Gemma2's final logit soft-capping where configured, and T5's
  /// d_model^-0.5 rescale of the input when its embeddings are tied).
  at::Tensor head(const at::Tensor& hidden) const;

  /// The dense FFN of layer L. Throws ParameterError for a native MoE layer
  /// (its FFNs are the sites blk.L.exp.E and blk.L.shared).
  FfnWeights ffnWeights(int layer) const;
  /// The FFN weights of any site: enc.blk.L / dec.blk.L for encoder-decoder
  /// models; blk.L.exp.E (gate, up, down of expert E: Mixtral's w1, w3, w2)
  /// and blk.L.shared (Qwen2-MoE's shared expert, without its sigmoid gate)
  /// for native MoE layers. Throws ParameterError for sites the model lacks.
  FfnWeights ffnWeights(const Site& site) const;
  /// nullptr restores the dense FFNs. On a model whose device() is not the
  /// CPU the model keeps ffn->onDevice(device()) (so ffnOverride() may be a
  /// copy of `ffn`); throws what onDevice throws.
  void setFfnOverride(std::shared_ptr<const FfnOverride> ffn);
  const std::shared_ptr<const FfnOverride>& ffnOverride() const { return override_; }

  /// Turns every weight into an owned F32 leaf with requires_grad and returns
  /// them (for training). Afterwards forward() records autograd graphs.
  std::vector<at::Tensor> makeTrainable();
  bool trainable() const { return trainable_; }

  /// Writes config.json and model.safetensors (dtype F32, F16 or BF16) into
  /// `dir` (which must exist). Tied heads are not written twice.
  void save(const std::filesystem::path& dir, const std::string& dtype = "F32") const;

 private:
  Model() = default;
  void bind(const LoadOptions& options, const std::string& fileForErrors);
  // The tensor of a role in F32 (a mapped half tensor is converted here, a
  // temporary the caller releases); undefined if absent.
  at::Tensor t(Role role, int layer = -1, SiteStack stack = SiteStack::Single, int expert = 0) const;
  // The token embedding rows of `ids` (any shape) in F32, [..., d_model]:
  // a mapped half table is indexed before converting, so only the looked-up
  // rows are converted.
  at::Tensor embedTokens(const at::Tensor& ids) const;
  struct Rope {
    at::Tensor cos, sin;  // [1, 1, T, rotated dims]
  };
  at::Tensor run(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& typeIds, KvCache* cache,
                 HookSink* hooks) const;
  at::Tensor attention(int layer, const at::Tensor& x, const at::Tensor& bias, const Rope& rope, KvCache* cache) const;
  at::Tensor norm(const at::Tensor& x, Role w, Role b, int layer) const;
  void splitFused(const std::string& fileForErrors);
  void resolveAliases(const std::string& fileForErrors);
  // T5 (model/t5.cpp): one stack over x [B, T, C] with the additive self-attention
  // bias [B, H, T, T]; the decoder also takes the encoder output and its bias [B, 1, 1, T_src].
  // With `cache` (decodeStep) the decoder's keys/values come from and go to it.
  at::Tensor t5Stack(SiteStack stack, at::Tensor x, const at::Tensor& selfBias, const at::Tensor& encoderOut,
                     const at::Tensor& crossBias, HookSink* hooks, Seq2SeqCache* cache = nullptr) const;
  // Projects x [B, S, C] with the k or v weight of a layer into heads [B, H, S, D].
  at::Tensor t5Heads(SiteStack stack, int layer, Role role, const at::Tensor& x) const;
  // Attention of the queries of x [B, T, C] over keys/values [B, H, S, D] plus `bias`.
  at::Tensor t5Attend(SiteStack stack, int layer, bool cross, const at::Tensor& x, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& bias) const;
  // Relative bias plus mask [B, H, T, T] of a whole stack (mask [B, T]).
  at::Tensor t5SelfBias(SiteStack stack, const at::Tensor& mask) const;
  // The decoder's causal bias [1, H, T, offset + T] of queries offset .. offset + T - 1.
  at::Tensor t5StepBias(int64_t offset, int64_t T) const;
  void checkSeq2Seq(const Batch& batch, const char* what) const;
  // Native MoE block of layer L (model/moe_native.cpp): x [B * T, d_model] -> [B * T, d_model].
  at::Tensor nativeMoe(int layer, const at::Tensor& x, int64_t B, int64_t T, HookSink* hooks) const;

  ModelConfig config_;
  std::filesystem::path dir_;
  std::string storedDType_ = "F32";
  std::string fingerprint_;
  std::string prefix_;
  std::map<std::string, at::Tensor> tensors_;
  std::vector<std::shared_ptr<void>> files_;  // keeps mappings alive
  std::shared_ptr<const FfnOverride> override_;
  bool trainable_ = false;
  bool mapped_ = false;
  c10::Device device_ = c10::Device(c10::kCPU);
};

}  // namespace moefy
