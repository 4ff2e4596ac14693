// The encoder-decoder forward pass (T5), after Hugging Face modeling_t5.py:
// T5ForConditionalGeneration, T5Stack, T5Block, T5LayerSelfAttention,
// T5LayerCrossAttention, T5LayerFF, T5Attention, T5LayerNorm. The
// single-stack models run through Model::run in model.cpp; the two share the
// tensor table, the FFN (denseFfn / FfnOverride) and the LM head.
#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"

namespace moefy {

namespace {

// Additive bias of a hidden key. HF adds finfo(float32).min; any value that
// sends exp() to 0 gives the same probabilities on rows with a visible key.
constexpr float kMasked = -1e30f;

// T5LayerNorm: x / sqrt(mean(x^2) + eps) * w, no mean subtraction, no bias.
at::Tensor t5Norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, true) + eps) * w;
}

// Relative position buckets [T, S] of key j seen from query i, as HF's
// T5Attention._relative_position_bucket(j - i): with `bidirectional` (the
// encoder) half of the buckets are for keys after the query; in the decoder
// keys after the query all fall in bucket 0 (they are masked anyway). Of the
// buckets of one direction, the first half are exact distances, the rest
// log-spaced up to maxDistance, and farther keys share the last one. The log
// is taken in float32 with HF's operation order: a distance whose log lands on
// an integer can fall in either neighbouring bucket depending on the rounding.
// The queries are positions offset .. offset + T - 1 (offset > 0: a decoding
// step), the keys 0 .. S - 1; the same elementwise operations as for offset 0,
// so a step's row equals that row of the whole-prefix table bit for bit.
at::Tensor relativeBuckets(int64_t T, int64_t S, bool bidirectional, int64_t numBuckets, int64_t maxDistance,
                           c10::Device device, int64_t offset = 0) {
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor rel = at::arange(S, longs).view({1, S}) - (at::arange(T, longs) + offset).view({T, 1});  // [T, S]
  at::Tensor buckets = at::zeros({T, S}, longs);
  if (bidirectional) {
    numBuckets /= 2;
    buckets = buckets + (rel > 0).to(at::kLong) * numBuckets;
    rel = rel.abs();
  } else {
    rel = -at::clamp_max(rel, 0);
  }
  const int64_t maxExact = numBuckets / 2;
  at::Tensor small = rel < maxExact;
  // log(0) = -inf for distance 0: that entry is small, so `large` is not used there.
  at::Tensor large =
      (at::log(rel.to(at::kFloat) / maxExact) /
       std::log(static_cast<double>(maxDistance) / static_cast<double>(maxExact)) * (numBuckets - maxExact))
          .to(at::kLong) +
      maxExact;
  large = at::clamp_max(large, numBuckets - 1);
  return buckets + at::where(small, rel, large);
}

// The cross-attention bias [B, 1, 1, S] of a source mask [B, S]: EncDecAttention
// has no relative bias, only the source padding.
at::Tensor sourceBias(const at::Tensor& sourceMask) {
  const int64_t B = sourceMask.size(0), S = sourceMask.size(1);
  return at::zeros({B, 1, 1, S}, sourceMask.options().dtype(at::kFloat))
      .masked_fill((sourceMask == 0).view({B, 1, 1, S}), kMasked);
}

}  // namespace

void Model::checkSeq2Seq(const Batch& batch, const char* what) const {
  if (!config_.encoderDecoder)
    throw ParameterError(std::string(archName(config_.arch)) + " is not an encoder-decoder model: use forward()");
  if (batch.ids.dim() != 2 || batch.ids.size(0) == 0 || batch.ids.size(1) == 0)
    throw ParameterError(std::string(what) + " batch must be a non-empty [B, T] id matrix");
  if (batch.mask.defined() && batch.mask.sizes() != batch.ids.sizes())
    throw ParameterError(std::string(what) + " mask " + shapeString(batch.mask) + " does not match its ids " +
                         shapeString(batch.ids));
  const int64_t lo = batch.ids.min().item<int64_t>(), hi = batch.ids.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab)
    throw ParameterError(std::string(what) + " token id " + std::to_string(lo < 0 ? lo : hi) +
                         " is outside the vocabulary [0, " + std::to_string(config_.vocab) + ")");
}

// compute_bias of block 0 (the only block with relative_attention_bias) plus
// the mask; HF computes the sum once per stack and passes it to every block.
at::Tensor Model::t5SelfBias(SiteStack stack, const at::Tensor& mask) const {
  const auto& c = config_;
  const bool decoder = stack == SiteStack::Decoder;
  const int64_t B = mask.size(0), T = mask.size(1);
  at::Tensor buckets = relativeBuckets(T, T, !decoder, c.relBuckets, c.relMaxDistance, mask.device());  // [T, T]
  at::Tensor rel = at::embedding(t(Role::RelBias, 0, stack), buckets)                    // [T, T, H]
                       .permute({2, 0, 1})
                       .unsqueeze(0);                // [1, H, T, T]
  at::Tensor hide = (mask == 0).view({B, 1, 1, T});  // padded keys
  if (decoder) {
    at::Tensor pos = at::arange(T, mask.options().dtype(at::kLong));
    hide = hide | (pos.view({1, T}) > pos.view({T, 1})).view({1, 1, T, T});  // keys after the query
  }
  hide = hide.expand({B, 1, T, T});
  return rel + at::zeros({B, 1, T, T}, mask.options().dtype(at::kFloat)).masked_fill(hide, kMasked);  // [B, H, T, T]
}

at::Tensor Model::t5Heads(SiteStack stack, int L, Role role, const at::Tensor& x) const {
  const int64_t B = x.size(0), S = x.size(1);
  return at::linear(x, t(role, L, stack)).view({B, S, config_.nHead, config_.headDim}).transpose(1, 2);
}

// The decoder's causal bias for a step: block 0's relative bias of the query
// positions offset .. offset + T - 1 against keys 0 .. offset + T - 1 (HF's
// compute_bias(real_seq_length, key_length) sliced to the last T query rows),
// keys after their query masked. No padding: every row of a step has T tokens.
at::Tensor Model::t5StepBias(int64_t offset, int64_t T) const {
  const auto& c = config_;
  const int64_t S = offset + T;
  at::Tensor buckets = relativeBuckets(T, S, false, c.relBuckets, c.relMaxDistance, device_, offset);  // [T, S]
  at::Tensor rel = at::embedding(t(Role::RelBias, 0, SiteStack::Decoder), buckets).permute({2, 0, 1}).unsqueeze(0);
  const auto on = at::TensorOptions().device(device_);
  at::Tensor pos = at::arange(S, on.dtype(at::kLong));
  at::Tensor hide = (pos.view({1, S}) > (pos.narrow(0, offset, T)).view({T, 1})).view({1, 1, T, S});
  return rel + at::zeros({1, 1, T, S}, on.dtype(at::kFloat)).masked_fill(hide, kMasked);  // [1, H, T, S]
}

// T5Attention: queries from x [B, T, C], keys and values k, v [B, H, S, D]
// (projected from x itself for self-attention, from the encoder output for
// cross-attention), scores q.k without 1/sqrt(d_kv) (T5 folds it into q's
// initialisation) plus `bias` (broadcast to [B, H, T, S]), softmax, o projection.
at::Tensor Model::t5Attend(SiteStack stack, int L, bool cross, const at::Tensor& x, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& bias) const {
  const int64_t B = x.size(0), T = x.size(1);
  const Role rq = cross ? Role::CrossQ : Role::AttnQ, ro = cross ? Role::CrossOut : Role::AttnOut;
  at::Tensor q = t5Heads(stack, L, rq, x);  // [B, H, T, D]
  if (!at::GradMode::is_enabled() && x.is_cpu()) {
    // Inference on the CPU: one (sequence, head) pair per task across the thread pool, as
    // Model::attention does: one batched matmul over the B x H small products
    // wakes every BLAS thread per product and ran slower than the products
    // (bench/bench_forward --case t5 shows attention against its GEMM bound).
    const int64_t H = q.size(1), D = q.size(3);
    at::Tensor out = at::empty({B, T, H, D}, q.options());  // [B, T, H, D]
    const bool inference = c10::InferenceMode::is_enabled();
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::optional<c10::InferenceMode> guard;  // thread-local: re-enter it in the worker
      if (inference) guard.emplace();
      at::NoGradGuard noGrad;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / H, h = i % H;
        // `bias` broadcasts to [B, H, T, S]: [B, H, T, T] (self), [B, 1, 1, S] (cross), [1, H, T, S] (a step).
        const at::Tensor pairBias = bias.select(0, bias.size(0) == 1 ? 0 : b).select(0, bias.size(1) == 1 ? 0 : h);
        at::Tensor s = at::mm(q.select(0, b).select(0, h), k.select(0, b).select(0, h).t());  // [T, S]
        s.add_(pairBias);
        at::Tensor o = out.select(0, b).select(1, h);  // [T, D] view into out
        at::mm_out(o, at::softmax(s, -1), v.select(0, b).select(0, h));
      }
    });
    return at::linear(out.view({B, T, H * D}), t(ro, L, stack));  // [B, T, C]
  }
  // Autograd path (training), and every device other than the CPU: batched matmuls.
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) + bias;                // [B, H, T, S]
  at::Tensor out = at::matmul(at::softmax(scores, -1), v);                      // [B, H, T, D]
  return at::linear(out.transpose(1, 2).reshape({B, T, -1}), t(ro, L, stack));  // [B, T, C]
}

// T5Stack: blocks of self-attention (+ cross-attention in the decoder) and
// the FFN, each sub-layer x + f(norm(x)), then the stack's final_layer_norm.
// Dropout is inactive at inference. With a cache (decodeStep), x holds the
// step's positions only: their self-attention keys/values are appended to
// the cached ones and attended over all of them, and the cross-attention uses
// the keys/values projected once by startSeq2Seq. Both paths share every
// other operation, the FFN override and the hooks included.
at::Tensor Model::t5Stack(SiteStack stack, at::Tensor x, const at::Tensor& selfBias, const at::Tensor& encoderOut,
                          const at::Tensor& crossBias, HookSink* hooks, Seq2SeqCache* cache) const {
  const auto& c = config_;
  const bool decoder = stack == SiteStack::Decoder;
  const int64_t B = x.size(0), T = x.size(1);
  for (int L = 0; L < c.layerCount(stack); ++L) {
    at::Tensor n = t5Norm(x, t(Role::AttnNorm, L, stack), c.normEps);
    at::Tensor k = t5Heads(stack, L, Role::AttnK, n), v = t5Heads(stack, L, Role::AttnV, n);  // [B, H, T, D]
    if (cache) {
      auto& ck = cache->selfK[static_cast<size_t>(L)];
      auto& cv = cache->selfV[static_cast<size_t>(L)];
      ck = ck.defined() ? at::cat({ck, k}, 2) : k;  // [B, H, length + T, D]
      cv = cv.defined() ? at::cat({cv, v}, 2) : v;
      k = ck, v = cv;
    }
    x = x + t5Attend(stack, L, false, n, k, v, selfBias);
    if (decoder) {
      n = t5Norm(x, t(Role::CrossNorm, L, stack), c.normEps);
      if (cache)
        x = x + t5Attend(stack, L, true, n, cache->crossK[static_cast<size_t>(L)],
                         cache->crossV[static_cast<size_t>(L)], crossBias);
      else
        x = x + t5Attend(stack, L, true, n, t5Heads(stack, L, Role::CrossK, encoderOut),
                         t5Heads(stack, L, Role::CrossV, encoderOut), crossBias);
    }
    at::Tensor h = t5Norm(x, t(Role::FfnNorm, L, stack), c.normEps);  // [B, T, C]
    const Site site{stack, L, -1, false};
    if (hooks && hooks->wantsSite(site, HookPoint::FfnIn)) hooks->onSite(site, HookPoint::FfnIn, h);
    const bool wantAct = hooks && hooks->wantsSite(site, HookPoint::FfnAct);
    at::Tensor act;  // [B * T, d_ff]
    at::Tensor flat = h.reshape({B * T, c.dModel});
    at::Tensor f = override_ ? override_->forwardSite(site, flat, wantAct ? &act : nullptr)
                             : denseFfn(ffnWeights(site), flat, wantAct ? &act : nullptr);
    if (wantAct) hooks->onSite(site, HookPoint::FfnAct, act.view({B, T, -1}));
    x = x + f.view({B, T, c.dModel});
  }
  return t5Norm(x, t(Role::OutNorm, 0, stack), c.normEps);
}

at::Tensor Model::encode(const Batch& source, HookSink* hooks) const {
  checkSeq2Seq(source, "source");
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  at::Tensor mask = (source.mask.defined() ? source.mask : at::ones_like(source.ids)).to(device_);  // [B, T]
  at::Tensor x = embedTokens(source.ids);  // [B, T, C]: no scaling, no absolute positions
  return t5Stack(SiteStack::Encoder, x, t5SelfBias(SiteStack::Encoder, mask), at::Tensor(), at::Tensor(), hooks);
}

at::Tensor Model::decodeHidden(const at::Tensor& encoderOut, const at::Tensor& sourceMask, const Batch& decoder,
                               HookSink* hooks) const {
  checkSeq2Seq(decoder, "decoder");
  const int64_t B = decoder.ids.size(0);
  if (encoderOut.dim() != 3 || encoderOut.size(0) != B || encoderOut.size(2) != config_.dModel)
    throw ParameterError("encoder output " + shapeString(encoderOut) + " does not fit a decoder batch of " +
                         std::to_string(B) + " and d_model " + std::to_string(config_.dModel));
  const int64_t S = encoderOut.size(1);
  if (sourceMask.dim() != 2 || sourceMask.size(0) != B || sourceMask.size(1) != S)
    throw ParameterError("source mask " + shapeString(sourceMask) + " does not match the encoder output " +
                         shapeString(encoderOut));
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  at::Tensor mask = (decoder.mask.defined() ? decoder.mask : at::ones_like(decoder.ids)).to(device_);  // [B, T]
  at::Tensor crossBias = sourceBias(sourceMask.to(device_));
  at::Tensor x = embedTokens(decoder.ids);  // [B, T, C]
  return t5Stack(SiteStack::Decoder, x, t5SelfBias(SiteStack::Decoder, mask), encoderOut.to(device_), crossBias, hooks);
}

at::Tensor Model::forwardSeq2Seq(const Batch& source, const Batch& decoder, HookSink* hooks) const {
  checkSeq2Seq(source, "source");
  checkSeq2Seq(decoder, "decoder");
  if (source.batchSize() != decoder.batchSize())
    throw ParameterError("source batch of " + std::to_string(source.batchSize()) + " sequences but decoder batch of " +
                         std::to_string(decoder.batchSize()));
  at::Tensor encoderOut = encode(source, hooks);  // [B, T_src, C]
  at::Tensor sourceMask = source.mask.defined() ? source.mask : at::ones_like(source.ids);
  return head(decodeHidden(encoderOut, sourceMask, decoder, hooks));  // [B, T_dec, vocab]
}

void Seq2SeqCache::keepRows(const at::Tensor& rows) {
  const int64_t B = batchSize();
  if (rows.dim() != 1 || (rows.numel() > 0 && (rows.min().item<int64_t>() < 0 || rows.max().item<int64_t>() >= B)))
    throw ParameterError("decoder cache rows " + shapeString(rows) + " must be indices in [0, " + std::to_string(B) +
                         ")");
  const at::Tensor r = rows.to(crossBias.device(), at::kLong);
  crossBias = crossBias.index_select(0, r);
  for (auto* list : {&crossK, &crossV, &selfK, &selfV})
    for (auto& x : *list)
      if (x.defined()) x = x.index_select(0, r);
}

Seq2SeqCache Model::startSeq2Seq(const Batch& source, HookSink* hooks) const {
  at::Tensor encoderOut = encode(source, hooks);  // [B, S, C]; checks the source
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  Seq2SeqCache cache;
  cache.crossBias = sourceBias((source.mask.defined() ? source.mask : at::ones_like(source.ids)).to(device_));
  const auto n = static_cast<size_t>(config_.layerCount(SiteStack::Decoder));
  cache.crossK.resize(n);
  cache.crossV.resize(n);
  cache.selfK.resize(n);
  cache.selfV.resize(n);
  for (size_t L = 0; L < n; ++L) {
    cache.crossK[L] = t5Heads(SiteStack::Decoder, static_cast<int>(L), Role::CrossK, encoderOut);
    cache.crossV[L] = t5Heads(SiteStack::Decoder, static_cast<int>(L), Role::CrossV, encoderOut);
  }
  return cache;
}

at::Tensor Model::decodeStep(const at::Tensor& ids, Seq2SeqCache& cache, HookSink* hooks) const {
  Batch step{ids, at::Tensor(), at::Tensor()};
  checkSeq2Seq(step, "decoder step");
  const auto n = static_cast<size_t>(config_.layerCount(SiteStack::Decoder));
  if (cache.crossK.size() != n || cache.selfK.size() != n || cache.crossV.size() != n || cache.selfV.size() != n)
    throw ParameterError("decoder cache was not made by startSeq2Seq of this model");
  if (ids.size(0) != cache.batchSize())
    throw ParameterError("decoder step of " + std::to_string(ids.size(0)) + " sequences on a cache of " +
                         std::to_string(cache.batchSize()));
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  const int64_t T = ids.size(1);
  at::Tensor x = embedTokens(ids.to(at::kLong));  // [B, T, C]
  at::Tensor out =
      t5Stack(SiteStack::Decoder, x, t5StepBias(cache.length, T), at::Tensor(), cache.crossBias, hooks, &cache);
  cache.length += T;
  return out;
}

}  // namespace moefy
