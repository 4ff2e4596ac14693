#include "analysis/eval/generate.h"

#include <torch/torch.h>

#include <cmath>

#include "analysis/common/error.h"
#include "analysis/model/model.h"

namespace moefy {

Decoder::Decoder(const Model& model) : model_(model) {
  if (!model.config().causal)
    throw ParameterError(std::string("generation needs a causal model, not ") + archName(model.config().arch));
  reset();
}

void Decoder::reset() {
  k_.assign(model_.config().nLayer, at::Tensor());
  v_.assign(model_.config().nLayer, at::Tensor());
  length_ = 0;
}

at::Tensor Decoder::w(int roleInt, int layer) const {
  Role role = static_cast<Role>(roleInt);
  std::string name = model_.tensorName(role, layer);
  if (name.empty()) return {};
  auto it = model_.tensors().find(name);
  if (it == model_.tensors().end()) return {};
  for (const auto& row : archTable(model_.config().arch).rows)
    if (row.role == role && row.conv1d) return it->second.t();
  return it->second;
}

at::Tensor Decoder::step(const std::vector<int64_t>& tokens) {
  c10::InferenceMode guard;
  const ModelConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) throw ParameterError("decoder step with no tokens");
  const int64_t P = length_;  // cached positions
  if (c.pos == PosKind::Learned && P + T > c.maxPos)
    throw ParameterError("sequence length " + std::to_string(P + T) + " exceeds the model's " + std::to_string(c.maxPos) +
                         " positions");
  for (int64_t id : tokens)
    if (id < 0 || id >= c.vocab)
      throw ParameterError("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
  auto R = [](Role r) { return static_cast<int>(r); };
  at::Tensor ids = at::tensor(tokens, at::kLong).view({1, T});
  at::Tensor x = at::embedding(w(R(Role::TokEmbd), 0), ids);  // [1, T, E]
  if (at::Tensor pin = w(R(Role::ProjIn), 0); pin.defined()) x = at::linear(x, pin);
  if (c.pos == PosKind::Learned) {
    at::Tensor pos = (at::arange(T, at::kLong) + P + c.posOffset).view({1, T});
    x = x + at::embedding(w(R(Role::PosEmbd), 0), pos);
  }
  at::Tensor cos, sin;
  if (c.pos == PosKind::Rope) {
    at::Tensor invFreq = 1.0 / at::pow(c.ropeTheta, at::arange(0, c.headDim, 2, at::kFloat) / c.headDim);
    at::Tensor freqs = at::outer(at::arange(P, P + T, at::kFloat), invFreq);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    cos = emb.cos().view({1, 1, T, c.headDim});
    sin = emb.sin().view({1, 1, T, c.headDim});
  }
  // Bias of the new queries over all keys [1, 1, T, P + T]: causal, plus the
  // sliding window (a query sees keys with q - k < window) where configured.
  at::Tensor qPos = at::arange(P, P + T, at::kLong).view({T, 1});
  at::Tensor kPos = at::arange(P + T, at::kLong).view({1, P + T});
  at::Tensor hide = kPos > qPos;
  if (c.slidingWindow > 0) hide = hide | ((qPos - kPos) >= c.slidingWindow);
  at::Tensor bias = at::zeros({T, P + T}, at::kFloat).masked_fill(hide, -1e30f).view({1, 1, T, P + T});

  auto rotateHalf = [](const at::Tensor& v) {
    auto half = v.size(-1) / 2;
    return at::cat({-v.narrow(-1, half, half), v.narrow(-1, 0, half)}, -1);
  };
  const int64_t H = c.nHead, KV = c.nKVHead, D = c.headDim;
  for (int L = 0; L < c.nLayer; ++L) {
    auto nrm = [&](const at::Tensor& v, Role wr, Role br) {
      if (c.norm == NormKind::RMSNorm) return v * at::rsqrt(v.pow(2).mean(-1, true) + c.normEps) * w(R(wr), L);
      return at::layer_norm(v, {v.size(-1)}, w(R(wr), L), w(R(br), L), c.normEps);
    };
    auto attention = [&](const at::Tensor& a) {
      at::Tensor q, k, v;
      if (at::Tensor qkvW = w(R(Role::AttnQKV), L); qkvW.defined()) {
        auto parts = at::linear(a, qkvW, w(R(Role::AttnQKVB), L)).split(c.dModel, -1);
        q = parts[0], k = parts[1], v = parts[2];
      } else {
        q = at::linear(a, w(R(Role::AttnQ), L), w(R(Role::AttnQB), L));
        k = at::linear(a, w(R(Role::AttnK), L), w(R(Role::AttnKB), L));
        v = at::linear(a, w(R(Role::AttnV), L), w(R(Role::AttnVB), L));
      }
      q = q.view({1, T, H, D}).transpose(1, 2);
      k = k.view({1, T, KV, D}).transpose(1, 2);
      v = v.view({1, T, KV, D}).transpose(1, 2);
      if (c.pos == PosKind::Rope) {
        q = q * cos + rotateHalf(q) * sin;
        k = k * cos + rotateHalf(k) * sin;
      }
      k_[L] = k_[L].defined() ? at::cat({k_[L], k}, 2) : k.contiguous();
      v_[L] = v_[L].defined() ? at::cat({v_[L], v}, 2) : v.contiguous();
      at::Tensor kk = k_[L], vv = v_[L];
      const int64_t S = P + T;
      if (KV != H) {
        kk = kk.unsqueeze(2).expand({1, KV, H / KV, S, D}).reshape({1, H, S, D});
        vv = vv.unsqueeze(2).expand({1, KV, H / KV, S, D}).reshape({1, H, S, D});
      }
      at::Tensor scores = at::matmul(q, kk.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(D))) + bias;
      at::Tensor out = at::matmul(at::softmax(scores, -1), vv).transpose(1, 2).reshape({1, T, H * D});
      return at::linear(out, w(R(Role::AttnOut), L), w(R(Role::AttnOutB), L));
    };
    at::Tensor h;
    if (c.preNorm) {
      x = x + attention(nrm(x, Role::AttnNorm, Role::AttnNormB));
      h = nrm(x, Role::FfnNorm, Role::FfnNormB);
    } else {
      x = nrm(x + attention(x), Role::AttnNorm, Role::AttnNormB);
      h = x;
    }
    at::Tensor flat = h.reshape({T, c.dModel});
    const auto& ov = model_.ffnOverride();
    at::Tensor f = ov ? ov->forward(L, flat, nullptr) : denseFfn(model_.ffnWeights(L), flat, nullptr);
    f = f.view({1, T, c.dModel});
    x = c.preNorm ? x + f : nrm(x + f, Role::FfnNorm, Role::FfnNormB);
  }
  length_ += T;
  at::Tensor last = x.select(1, T - 1);  // [1, C]
  if (c.finalNorm) {
    if (c.norm == NormKind::RMSNorm)
      last = last * at::rsqrt(last.pow(2).mean(-1, true) + c.normEps) * w(R(Role::OutNorm), 0);
    else
      last = at::layer_norm(last, {last.size(-1)}, w(R(Role::OutNorm), 0), w(R(Role::OutNormB), 0), c.normEps);
  }
  if (at::Tensor pout = w(R(Role::ProjOut), 0); pout.defined()) last = at::linear(last, pout);
  return model_.head(last).view({-1});
}

std::vector<int64_t> greedyGenerate(const Model& model, const std::vector<int64_t>& prompt, int newTokens, bool useCache) {
  if (prompt.empty()) throw ParameterError("generation needs a non-empty prompt");
  std::vector<int64_t> out;
  if (useCache) {
    Decoder dec(model);
    at::Tensor logits = dec.step(prompt);
    for (int i = 0; i < newTokens; ++i) {
      int64_t next = logits.argmax().item<int64_t>();
      out.push_back(next);
      if (i + 1 < newTokens) logits = dec.step({next});
    }
    return out;
  }
  std::vector<int64_t> seq = prompt;
  for (int i = 0; i < newTokens; ++i) {
    at::Tensor logits = model.forward(makeBatch({seq}));
    int64_t next = logits[0][static_cast<int64_t>(seq.size()) - 1].argmax().item<int64_t>();
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

}  // namespace moefy
