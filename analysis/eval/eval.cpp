#include "analysis/eval/eval.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <random>

#include "analysis/common/distributed.h"
#include "analysis/common/error.h"
#include "analysis/common/timing.h"
#include "analysis/eval/generate.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/activation_bound.h"
#include "analysis/moe/ffn_flops.h"
#include "analysis/moe/moe_ffn.h"

namespace moefy {

namespace {

struct OverrideGuard {
  Model& m;
  std::shared_ptr<const FfnOverride> saved;
  explicit OverrideGuard(Model& model) : m(model), saved(model.ffnOverride()) {}
  ~OverrideGuard() { m.setFfnOverride(saved); }
};

// At every sparse layer's FFN input (real tokens only), per candidate: the
// neurons it computes there (a MoE: the sizes of the experts it routes these
// inputs to; the bound: K per token) and, with layer errors, its FFN output's
// error against the reference FFN's at the same inputs.
// Sites are keyed by site index (ModelConfig::siteIndex): the layer for
// single-stack models; the encoder's and decoder's real tokens are their own
// rows (validRows per stack). An expert site blk.L.exp.E of a native MoE
// layer sees the inputs of the tokens routed to E (model.h HookPoint): its
// real ones are found from the layer's TopkIds, which come first.
class CandidateSink : public HookSink {
 public:
  CandidateSink(const Model& model, const FfnOverride* ref, const EvalCandidate& cand,
                const std::map<SiteStack, at::Tensor>& validRows, bool errors)
      : model_(model), ref_(ref), cand_(cand), rows_(validRows), errors_(errors) {
    for (auto& [stack, rows] : rows_) rows = rows.to(model.device());  // once per batch, beside the hooks
  }
  std::vector<double>* num = nullptr;
  std::vector<double>* den = nullptr;
  std::vector<double>* neurons = nullptr;  ///< per site index: neurons computed, summed over tokens
  std::vector<double>* tokens = nullptr;   ///< per site index: tokens counted
  /// per site index: tokens that took k = 0..max k experts (dynamic-k sites only, else empty)
  std::vector<std::vector<int64_t>>* kCounts = nullptr;
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site& site, HookPoint p) const override {
    if (!rows_.count(site.stack)) return false;
    const ModelConfig& c = model_.config();
    if (p == HookPoint::TopkIds) {  // a native MoE layer with a sparse expert site
      for (const Site& es : c.expertSites(site.layer))
        if (es.expert >= 0 && cand_.isSparse(c.siteIndex(es))) return site.expert < 0 && !site.shared;
      return false;
    }
    if (p != HookPoint::FfnIn) return false;
    const int L = c.siteIndex(site);
    return L >= 0 && cand_.isSparse(L);
  }
  void onSite(const Site& site, HookPoint p, const at::Tensor& x) override {
    // Everything below runs on the hook's device (the model's, --device): the
    // candidate's experts were packed from the model's weights there
    // (buildMoeFfn), the row indices were moved to it at construction, and
    // only the sums come back to the host.
    if (p == HookPoint::TopkIds) {
      topk_[site.layer] = x.reshape({-1, x.size(-1)});  // [B*T, k]
      return;
    }
    const int layer = model_.config().siteIndex(site);
    at::Tensor flat;
    if (site.expert >= 0) {
      // x [n, d_model]: the tokens routed to the expert, ascending, as nativeMoe picks them.
      const at::Tensor& ids = topk_.at(site.layer);
      at::Tensor routed = (ids == site.expert).any(1).nonzero().reshape({-1});  // [n] flat tokens
      at::Tensor real =
          at::zeros({ids.size(0)}, ids.options().dtype(at::kBool)).index_fill_(0, rows_.at(site.stack), true);
      flat = x.index_select(0, real.index_select(0, routed).nonzero().reshape({-1})).contiguous();
    } else {
      flat = x.reshape({-1, x.size(-1)}).index_select(0, rows_.at(site.stack)).contiguous();
    }
    const int64_t n = flat.size(0);
    at::Tensor yc;
    if (cand_.moe) {
      const MoeFfn& moe = *cand_.moe;
      const ExpertLayout& lay = moe.layers()[layer].weights->layout;
      at::Tensor sel;
      {
        at::NoGradGuard ng;
        sel = moe.route(layer, flat.detach());  // what forward() routes these inputs to
      }
      std::vector<int64_t> sizes(lay.experts);
      for (int e = 0; e < lay.experts; ++e) sizes[e] = lay.expertSize(e);
      // Entries -1 (a dynamic-k token that took fewer than the most) are no expert.
      const at::Tensor selFlat = sel.reshape({-1});
      (*neurons)[layer] += at::tensor(sizes, at::kLong)
                               .to(selFlat.device())
                               .index_select(0, selFlat.clamp_min(0))
                               .masked_fill(selFlat < 0, 0)
                               .sum()
                               .item<double>();
      if (kCounts && moe.layers()[layer].router->kind == RouterKind::DynamicK) {
        at::Tensor k = at::bincount((sel >= 0).sum(1), {}, sel.size(1) + 1).cpu().contiguous();  // [max k + 1]
        auto& hist = (*kCounts)[layer];
        hist.resize(static_cast<size_t>(k.numel()), 0);
        for (int64_t j = 0; j < k.numel(); ++j) hist[static_cast<size_t>(j)] += k.data_ptr<int64_t>()[j];
      }
      // The shared expert runs for every token (analysis/moe/moe_ffn.h).
      (*neurons)[layer] += static_cast<double>(n) * static_cast<double>(lay.sharedSize());
      if (errors_) yc = moe.compute(layer, flat, sel, nullptr);
    } else {
      (*neurons)[layer] += static_cast<double>(n) * static_cast<double>(cand_.bound->keep()[layer]);
      if (errors_) yc = cand_.bound->forwardSite(site, flat, nullptr);
    }
    (*tokens)[layer] += static_cast<double>(n);
    if (!errors_) return;
    at::Tensor yr = ref_ ? ref_->forwardSite(site, flat, nullptr) : denseFfn(model_.ffnWeights(site), flat, nullptr);
    (*num)[layer] += (yc - yr).pow(2).sum().item<double>();
    (*den)[layer] += yr.pow(2).sum().item<double>();
  }

 private:
  const Model& model_;
  const FfnOverride* ref_;
  const EvalCandidate& cand_;
  std::map<SiteStack, at::Tensor> rows_;
  bool errors_;
  std::map<int, at::Tensor> topk_;  // native MoE layer -> its TopkIds [B*T, k] of this batch
};

// One scored batch for the shared quality loop: `logits` runs the model (with
// its current FFN override) and returns [B, T, V]; the scored positions are
// (row, pos) with their targets; validRows holds, per stack, the flat rows
// b * T + t of real (unpadded) tokens.
struct EvalBatch {
  std::function<at::Tensor(HookSink*)> logits;
  at::Tensor row, pos, target;  // [P] int64
  std::map<SiteStack, at::Tensor> validRows;
};

// What layer L of a candidate computes per token, with n its mean neurons.
FfnFlopCount flopCount(const EvalCandidate& c, const ModelConfig& cfg, int L, double n) {
  FfnFlopCount f;
  f.dModel = cfg.dModel;
  f.dFF = cfg.dFF;
  f.gated = cfg.gated;
  if (!c.isSparse(L)) return f;
  f.neurons = n;
  if (c.bound) {
    f.method = FfnFlopCount::Method::ActivationBound;
    const FfnWeights& w = c.bound->ffn()[L];
    f.dModel = w.up.size(1);
    f.dFF = w.up.size(0);
    f.gated = w.gated();
    return f;
  }
  const MoeLayer& l = c.moe->layers()[L];
  f.method = FfnFlopCount::Method::Moe;
  f.dModel = l.weights->dModel();
  f.dFF = l.weights->dFF();
  f.gated = l.weights->gated();
  f.router = l.router->kind;
  f.experts = l.weights->layout.experts;
  return f;
}

}  // namespace

ScoredBatch makeScoredBatch(std::vector<std::vector<int64_t>> seqs, bool causal, int64_t maskId, double fraction,
                            std::mt19937_64& rng) {
  std::vector<int64_t> bi, ti, target;
  std::uniform_real_distribution<double> u(0, 1);
  for (size_t b = 0; b < seqs.size(); ++b) {
    auto& s = seqs[b];
    const int64_t n = static_cast<int64_t>(s.size());
    if (causal) {
      for (int64_t t = 0; t + 1 < n; ++t) bi.push_back(b), ti.push_back(t), target.push_back(s[t + 1]);
      continue;
    }
    std::vector<int64_t> picked;
    for (int64_t t = 1; t + 1 < n; ++t)
      if (u(rng) < fraction) picked.push_back(t);
    if (picked.empty() && n >= 3) picked.push_back(1 + static_cast<int64_t>(rng() % (n - 2)));
    for (int64_t t : picked) bi.push_back(b), ti.push_back(t), target.push_back(s[t]), s[t] = maskId;
  }
  ScoredBatch sb;
  sb.batch = makeBatch(seqs, 0);
  sb.row = at::tensor(bi, at::kLong);
  sb.pos = at::tensor(ti, at::kLong);
  sb.target = at::tensor(target, at::kLong);
  return sb;
}

std::shared_ptr<const FfnOverride> EvalCandidate::ffn() const {
  if (moe) return moe;
  return bound;
}

bool EvalCandidate::isSparse(int layer) const { return moe ? moe->isMoe(layer) : bound && bound->isSparse(layer); }

bool EvalCandidate::needsDenseHidden() const {
  if (bound) return true;
  for (const auto& l : moe->layers())
    if (l.weights && l.router && l.router->kind == RouterKind::Oracle) return true;
  return false;
}

nlohmann::json QualityFigures::toJson() const {
  nlohmann::json j;
  j["name"] = name;
  j["fraction"] = fraction;
  if (neuronsKept.empty())
    j["top_k"] = topK;
  else
    j["neurons_kept"] = neuronsKept;
  j["loss"] = loss;
  j["perplexity"] = perplexity;
  j["top1_agreement"] = top1Agreement;
  j["kl"] = kl;
  nlohmann::json le = nlohmann::json::array();
  for (double v : layerRelError) le.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
  j["layer_rel_error"] = le;
  j["positions"] = positions;
  j["ffn_flops_fraction"] = ffnFlopsFraction;
  nlohmann::json lf = nlohmann::json::array();
  for (double v : layerFfnFlopsFraction) lf.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
  j["layer_ffn_flops_fraction"] = lf;
  if (!ffnFlopsNote.empty()) j["ffn_flops_note"] = ffnFlopsNote;
  if (!kHistogram.empty()) {
    nlohmann::json mk = nlohmann::json::array(), kh = nlohmann::json::array();
    for (size_t L = 0; L < kHistogram.size(); ++L) {
      const bool has = !kHistogram[L].empty();
      mk.push_back(has && L < meanK.size() ? nlohmann::json(meanK[L]) : nlohmann::json(nullptr));
      kh.push_back(has ? nlohmann::json(kHistogram[L]) : nlohmann::json(nullptr));
    }
    j["mean_k"] = mk;
    j["k_histogram"] = kh;
  }
  return j;
}

namespace {

// The quality loop shared by causal/MLM and sequence-to-sequence evaluation:
// `batches` yields the scored batches (returns false when done); `progress`
// reports the share done after each.
std::vector<QualityFigures> evaluateBatches(Model& model, std::shared_ptr<const FfnOverride> reference,
                                            const std::vector<EvalCandidate>& candidates,
                                            const std::function<bool(EvalBatch&, double&)>& batches,
                                            const EvalOptions& o, JobContext& job) {
  OverrideGuard guard(model);
  const ModelConfig& c = model.config();
  const int nL = static_cast<int>(siteIndexTable(c).size());  // site indices (expert sites included)
  // Native MoE models: only the MoEfied expert sites are counted, each weighted
  // by the tokens routed to it (the other sites are the model as it is).
  const bool native = c.expertCount > 0;
  const size_t nC = candidates.size();
  std::vector<double> loss(nC + 1, 0.0), agree(nC + 1, 0.0), kl(nC + 1, 0.0);
  std::vector<std::vector<double>> num(nC, std::vector<double>(nL, 0.0)), den(nC, std::vector<double>(nL, 0.0));
  std::vector<std::vector<double>> neurons(nC, std::vector<double>(nL, 0.0)), tokens(nC, std::vector<double>(nL, 0.0));
  std::vector<std::vector<std::vector<int64_t>>> kCounts(nC, std::vector<std::vector<int64_t>>(nL));
  int64_t positions = 0;
  job.setStage("eval: quality");
  EvalBatch eb;
  double done = 0;
  // Under mpirun (analysis/common/distributed.h) every rank draws every batch
  // (the masked-LM masks come from one seeded stream) and scores those with
  // index % ranks == rank; the sums are added across ranks below.
  const int ranks = dist::size(), rank = dist::rank();
  // The ranks' setups (model, corpus, routers) succeeded on every rank.
  dist::agree(nullptr);
  dist::workStarted();
  int64_t batchIndex = 0;
  while (true) {
    job.checkCancel();
    eb = EvalBatch{};
    if (!batches(eb, done)) break;
    if (batchIndex++ % ranks != rank) continue;
    if (eb.row.numel() == 0) continue;
    // The scored positions go to the model's device (--device), where the logits are.
    const at::Tensor bT = eb.row.to(model.device()), tT = eb.pos.to(model.device()), yT = eb.target.to(model.device());
    const int64_t P = eb.row.numel();
    at::Tensor lpRef;
    {
      model.setFfnOverride(reference);
      at::Tensor logits = eb.logits(nullptr);
      lpRef = at::log_softmax(logits.index({bT, tT}), -1);  // [P, V]
    }
    at::Tensor refArg = lpRef.argmax(-1);
    at::Tensor pRef = lpRef.exp();
    loss[0] -= lpRef.gather(1, yT.unsqueeze(1)).sum().item<double>();
    agree[0] += static_cast<double>(P);
    for (size_t ci = 0; ci < nC; ++ci) {
      job.checkCancel();
      model.setFfnOverride(candidates[ci].ffn());
      CandidateSink sink(model, reference.get(), candidates[ci], eb.validRows, o.layerErrors);
      sink.num = &num[ci];
      sink.den = &den[ci];
      sink.neurons = &neurons[ci];
      sink.tokens = &tokens[ci];
      sink.kCounts = &kCounts[ci];
      at::Tensor logits = eb.logits(&sink);
      at::Tensor lp = at::log_softmax(logits.index({bT, tT}), -1);
      loss[ci + 1] -= lp.gather(1, yT.unsqueeze(1)).sum().item<double>();
      agree[ci + 1] += (lp.argmax(-1) == refArg).sum().item<double>();
      kl[ci + 1] += (pRef * (lpRef - lp)).sum().item<double>();
    }
    positions += P;
    job.setProgress(done);
  }
  if (ranks > 1) {
    // Sums in MPI's order: equal to one process's within float summation
    // rounding; the counts (positions, k histograms) exactly.
    auto sumAll = [](std::vector<double>& v) {
      at::Tensor t = at::from_blob(v.data(), {static_cast<int64_t>(v.size())}, at::kDouble);
      dist::allReduce(t, dist::ReduceOp::Sum);
    };
    sumAll(loss), sumAll(agree), sumAll(kl);
    for (size_t ci = 0; ci < nC; ++ci) {
      sumAll(num[ci]), sumAll(den[ci]), sumAll(neurons[ci]), sumAll(tokens[ci]);
      for (auto& hist : kCounts[ci]) {
        at::Tensor width = at::tensor({static_cast<int64_t>(hist.size())}, at::kLong);
        dist::allReduce(width, dist::ReduceOp::Max);
        hist.resize(static_cast<size_t>(width.item<int64_t>()), 0);
        at::Tensor t = at::from_blob(hist.data(), {static_cast<int64_t>(hist.size())}, at::kLong);
        dist::allReduce(t, dist::ReduceOp::Sum);
      }
    }
    at::Tensor p = at::tensor({positions}, at::kLong);
    dist::allReduce(p, dist::ReduceOp::Sum);
    positions = p.item<int64_t>();
  }
  // From here every rank holds the same sums: an error is every rank's, and
  // agreeing on it reports it once.
  std::exception_ptr figuresError;
  std::vector<QualityFigures> out;
  try {
    if (positions == 0)
      throw ParameterError(c.encoderDecoder
                               ? "no positions to score (no target tokens)"
                               : "no positions to score (sequences need at least 2 tokens, 3 for masked LM)");
    for (size_t i = 0; i <= nC; ++i) {
      QualityFigures f;
      f.name = i == 0 ? "reference" : candidates[i - 1].name;
      f.fraction = i == 0 ? 1.0 : candidates[i - 1].fraction;
      f.loss = loss[i] / positions;
      f.perplexity = std::exp(f.loss);
      f.top1Agreement = agree[i] / positions;
      // KL(p || q) >= 0; the sum of p (log p - log q) over the vocabulary
      // rounds to about -1e-9 where q equals p (every expert active).
      f.kl = std::max(0.0, kl[i] / positions);
      f.positions = positions;
      f.topK.assign(nL, 0);
      f.layerRelError.assign(nL, NAN);
      f.layerFfnFlopsFraction.assign(nL, NAN);
      if (i > 0) {
        const EvalCandidate& cand = candidates[i - 1];
        if (cand.bound) {
          f.topK.clear();
          f.neuronsKept = cand.bound->keep();
          f.ffnFlopsNote = "top-k activation bound: counts the dense hidden it needs, and W2 on the kept neurons";
        } else if (cand.needsDenseHidden()) {
          f.ffnFlopsNote = "oracle router: counts the dense hidden its scores need";
        }
        double flops = 0, dense = 0;
        if (native) {
          const std::string note =
              "native MoE: the FFN FLOPs of the MoEfied expert sites, weighted by the tokens routed to each, against "
              "the same experts dense";
          f.ffnFlopsNote = f.ffnFlopsNote.empty() ? note : f.ffnFlopsNote + "; " + note;
        }
        for (int L = 0; L < nL; ++L) {
          if (native && !cand.isSparse(L)) continue;
          const double n = tokens[i - 1][L] > 0 ? neurons[i - 1][L] / tokens[i - 1][L] : 0.0;
          const FfnFlopCount count = flopCount(cand, c, L, n);
          FfnFlopCount denseCount = count;
          denseCount.method = FfnFlopCount::Method::Dense;
          const double weight = native ? tokens[i - 1][L] : 1.0;
          flops += weight * ffnFlops(count);
          dense += weight * ffnFlops(denseCount);
          if (!cand.isSparse(L)) continue;
          f.layerFfnFlopsFraction[L] = ffnFlopsFraction(count);
          if (cand.moe) f.topK[L] = cand.moe->layers()[L].topK;
          if (o.layerErrors) f.layerRelError[L] = den[i - 1][L] > 0 ? std::sqrt(num[i - 1][L] / den[i - 1][L]) : 0.0;
          const auto& hist = kCounts[i - 1][L];
          if (!hist.empty()) {
            if (f.kHistogram.empty()) f.kHistogram.assign(nL, {}), f.meanK.assign(nL, NAN);
            double sum = 0, cnt = 0;
            for (size_t k = 0; k < hist.size(); ++k) sum += double(k) * double(hist[k]), cnt += double(hist[k]);
            f.kHistogram[L] = hist;
            f.meanK[L] = cnt > 0 ? sum / cnt : 0.0;
          }
        }
        if (!(dense > 0))
          throw ParameterError("eval: no evaluated token was routed to the MoEfied expert sites of " + f.name +
                               ", so nothing of them was measured; evaluate on more text");
        f.ffnFlopsFraction = flops / dense;
      }
      out.push_back(std::move(f));
    }
  } catch (...) {
    figuresError = std::current_exception();
  }
  dist::agree(figuresError);
  return out;
}

}  // namespace

std::vector<QualityFigures> evaluateQuality(Model& model, std::shared_ptr<const FfnOverride> reference,
                                            const std::vector<EvalCandidate>& candidates,
                                            const std::vector<std::vector<int64_t>>& sequences, const EvalOptions& o,
                                            JobContext& job) {
  const ModelConfig& c = model.config();
  if (c.encoderDecoder)
    throw ParameterError(c.modelType +
                         " is an encoder-decoder model: evaluate it on a parallel corpus "
                         "(evaluateSeq2SeqQuality)");
  const bool mlm = !c.causal;
  if (mlm && (o.maskTokenId < 0 || o.maskTokenId >= c.vocab))
    throw ParameterError("masked-LM evaluation needs the tokenizer's mask token ([MASK]); none is defined");
  if (o.batch <= 0) throw ParameterError("--batch must be positive");
  std::mt19937_64 rng(o.seed);
  size_t b0 = 0;
  const Model* mp = &model;
  auto next = [&](EvalBatch& eb, double& done) {
    if (b0 >= sequences.size()) return false;
    const size_t b1 = std::min(sequences.size(), b0 + static_cast<size_t>(o.batch));
    auto sb = std::make_shared<ScoredBatch>(
        makeScoredBatch(std::vector<std::vector<int64_t>>(sequences.begin() + static_cast<long>(b0),
                                                          sequences.begin() + static_cast<long>(b1)),
                        !mlm, o.maskTokenId, o.mlmFraction, rng));
    eb.row = sb->row;
    eb.pos = sb->pos;
    eb.target = sb->target;
    eb.validRows[SiteStack::Single] = sb->batch.mask.reshape({-1}).nonzero().reshape({-1});
    eb.logits = [mp, sb](HookSink* sink) { return mp->forward(sb->batch, sink); };
    done = double(b1) / sequences.size();
    b0 = b1;
    return true;
  };
  return evaluateBatches(model, std::move(reference), candidates, next, o, job);
}

std::vector<QualityFigures> evaluateSeq2SeqQuality(Model& model, std::shared_ptr<const FfnOverride> reference,
                                                   const std::vector<EvalCandidate>& candidates,
                                                   const std::vector<Seq2SeqExample>& pairs, const EvalOptions& o,
                                                   JobContext& job) {
  const ModelConfig& c = model.config();
  if (!c.encoderDecoder)
    throw ParameterError(c.modelType +
                         " is a single-stack model: sequence-to-sequence evaluation needs an "
                         "encoder-decoder model");
  if (o.batch <= 0) throw ParameterError("--batch must be positive");
  size_t b0 = 0;
  const Model* mp = &model;
  auto next = [&](EvalBatch& eb, double& done) {
    if (b0 >= pairs.size()) return false;
    const size_t b1 = std::min(pairs.size(), b0 + static_cast<size_t>(o.batch));
    std::vector<std::vector<int64_t>> src, dec;
    std::vector<int64_t> bi, ti, target;
    for (size_t b = b0; b < b1; ++b) {
      const Seq2SeqExample& p = pairs[b];
      if (p.source.empty() || p.decoderInput.empty() || p.labels.size() != p.decoderInput.size())
        throw ParameterError("pair " + std::to_string(b) + ": needs a source and labels as long as its decoder input");
      src.push_back(p.source);
      dec.push_back(p.decoderInput);
      // Teacher forcing: decoder position t predicts labels[t]; padding is never scored.
      for (size_t t = 0; t < p.labels.size(); ++t)
        bi.push_back(static_cast<int64_t>(b - b0)), ti.push_back(static_cast<int64_t>(t)),
            target.push_back(p.labels[t]);
    }
    auto sb = std::make_shared<std::pair<Batch, Batch>>(makeBatch(src, 0), makeBatch(dec, 0));
    eb.row = at::tensor(bi, at::kLong);
    eb.pos = at::tensor(ti, at::kLong);
    eb.target = at::tensor(target, at::kLong);
    eb.validRows[SiteStack::Encoder] = sb->first.mask.reshape({-1}).nonzero().reshape({-1});
    eb.validRows[SiteStack::Decoder] = sb->second.mask.reshape({-1}).nonzero().reshape({-1});
    eb.logits = [mp, sb](HookSink* sink) { return mp->forwardSeq2Seq(sb->first, sb->second, sink); };
    done = double(b1) / pairs.size();
    b0 = b1;
    return true;
  };
  return evaluateBatches(model, std::move(reference), candidates, next, o, job);
}

SpeedStats SpeedStats::of(std::vector<double> rates) {
  SpeedStats s;
  if (rates.empty()) return s;
  std::sort(rates.begin(), rates.end());
  const size_t n = rates.size();
  s.runs = static_cast<int>(n);
  s.min = rates.front();
  s.max = rates.back();
  s.median = n % 2 ? rates[n / 2] : 0.5 * (rates[n / 2 - 1] + rates[n / 2]);
  return s;
}

namespace {

// The timing loop of every speed: one untimed warm-up per override (allocator
// and thread-pool warm-up), then interleavedSeconds over the overrides (one
// run each per round, the order reversed every other round, so a drift of
// the machine falls on all alike). `run` does one run with the override in
// place and returns the seconds it timed; every run does the same work of
// `tokensPerRun` tokens.
std::vector<SpeedStats> interleavedRuns(Model& model, const FfnOverrides& ffns, const std::function<void()>& warmUp,
                                        const std::function<double()>& run, double tokensPerRun, double minSeconds,
                                        int minRuns) {
  if (ffns.empty()) throw ParameterError("no FFN to time");
  OverrideGuard guard(model);
  for (const auto& f : ffns) {
    model.setFfnOverride(f);
    warmUp();
  }
  std::vector<std::function<double()>> runs;
  for (const auto& f : ffns)
    runs.push_back([&model, &run, f] {
      model.setFfnOverride(f);
      return run();
    });
  std::vector<SpeedStats> out;
  out.reserve(ffns.size());
  for (const auto& secs : interleavedSeconds(runs, minSeconds, std::max(1, minRuns))) {
    std::vector<double> rates;
    rates.reserve(secs.size());
    for (double s : secs) rates.push_back(tokensPerRun / std::max(s, 1e-9));
    out.push_back(SpeedStats::of(std::move(rates)));
  }
  return out;
}

double secondsOf(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<SpeedStats> forwardSpeeds(Model& model, const FfnOverrides& ffns,
                                      const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds,
                                      int minRuns, const JobContext* job) {
  if (sequences.empty()) throw ParameterError("no sequences to time");
  if (batch < 1) throw ParameterError("batch must be >= 1 (got " + std::to_string(batch) + ")");
  std::vector<Batch> batches;
  for (size_t b0 = 0; b0 < sequences.size(); b0 += static_cast<size_t>(batch)) {
    std::vector<std::vector<int64_t>> seqs(
        sequences.begin() + static_cast<long>(b0),
        sequences.begin() + static_cast<long>(std::min(sequences.size(), b0 + batch)));
    batches.push_back(makeBatch(seqs, 0));
  }
  int64_t tokens = 0;
  for (const Batch& b : batches) tokens += b.mask.sum().item<int64_t>();
  // The batches are built once, outside the timing, so every run times the same work.
  return interleavedRuns(
      model, ffns, [&] { model.forward(batches.front()); },
      [&] {
        return secondsOf([&] {
          for (const Batch& b : batches) {
            model.forward(b);
            if (job) job->checkCancel();  // a timing pass lasts seconds: cancel per batch
          }
        });
      },
      static_cast<double>(tokens), minSeconds, minRuns);
}

SpeedStats forwardSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn,
                        const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds, int minRuns,
                        const JobContext* job) {
  return forwardSpeeds(model, {std::move(ffn)}, sequences, batch, minSeconds, minRuns, job).front();
}

std::vector<SpeedStats> forwardSeq2SeqSpeeds(Model& model, const FfnOverrides& ffns,
                                             const std::vector<Seq2SeqExample>& pairs, int batch, double minSeconds,
                                             int minRuns, const JobContext* job) {
  if (!model.config().encoderDecoder)
    throw ParameterError(model.config().modelType + " is a single-stack model: time it with forwardSpeed");
  if (pairs.empty()) throw ParameterError("no pairs to time");
  if (batch < 1) throw ParameterError("batch must be >= 1 (got " + std::to_string(batch) + ")");
  std::vector<std::pair<Batch, Batch>> batches;
  int64_t tokens = 0;
  for (size_t b0 = 0; b0 < pairs.size(); b0 += static_cast<size_t>(batch)) {
    std::vector<std::vector<int64_t>> src, dec;
    for (size_t b = b0; b < std::min(pairs.size(), b0 + static_cast<size_t>(batch)); ++b) {
      if (pairs[b].source.empty() || pairs[b].decoderInput.empty())
        throw ParameterError("pair " + std::to_string(b) + ": needs a source and a decoder input to time");
      src.push_back(pairs[b].source);
      dec.push_back(pairs[b].decoderInput);
      tokens += static_cast<int64_t>(pairs[b].source.size() + pairs[b].decoderInput.size());
    }
    batches.emplace_back(makeBatch(src, 0), makeBatch(dec, 0));
  }
  c10::InferenceMode inference;
  return interleavedRuns(
      model, ffns, [&] { model.forwardSeq2Seq(batches.front().first, batches.front().second); },
      [&] {
        return secondsOf([&] {
          for (const auto& [src, dec] : batches) {
            model.forwardSeq2Seq(src, dec);
            if (job) job->checkCancel();
          }
        });
      },
      static_cast<double>(tokens), minSeconds, minRuns);
}

SpeedStats forwardSeq2SeqSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn,
                               const std::vector<Seq2SeqExample>& pairs, int batch, double minSeconds, int minRuns,
                               const JobContext* job) {
  return forwardSeq2SeqSpeeds(model, {std::move(ffn)}, pairs, batch, minSeconds, minRuns, job).front();
}

std::vector<SpeedStats> generationSpeeds(Model& model, const FfnOverrides& ffns, const std::vector<int64_t>& prompt,
                                         int newTokens, double minSeconds, int minRuns, const JobContext* job) {
  if (newTokens < 1) throw ParameterError("generation timing needs at least one new token");
  // Whole generations (prompt, then newTokens greedy steps, only the steps
  // timed). An encoder-decoder model takes the prompt as its source (encoder
  // and cross-attention keys/values untimed, as the causal prompt) and
  // decodes from decoder_start_token_id; eos does not stop a timing run.
  auto onceSeq2Seq = [&] {
    c10::InferenceMode inference;
    Seq2SeqCache cache = model.startSeq2Seq(makeBatch({prompt}));
    at::Tensor ids = at::full({1, 1}, static_cast<int64_t>(model.config().decoderStartId), at::kLong);
    return secondsOf([&] {
      for (int i = 0; i < newTokens; ++i) {
        at::Tensor logits = model.head(model.decodeStep(ids, cache)).view({-1});
        ids = logits.argmax().view({1, 1});
        if (job) job->checkCancel();
      }
    });
  };
  auto once = [&] {
    if (model.config().encoderDecoder) return onceSeq2Seq();
    Decoder dec(model);
    at::Tensor logits = dec.step(prompt);
    return secondsOf([&] {
      for (int i = 0; i < newTokens; ++i) {
        logits = dec.step({logits.argmax().item<int64_t>()});
        if (job) job->checkCancel();  // per step: cancel within one token's time
      }
    });
  };
  return interleavedRuns(
      model, ffns, [&] { once(); }, once, static_cast<double>(newTokens), minSeconds, minRuns);
}

SpeedStats generationSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn, const std::vector<int64_t>& prompt,
                           int newTokens, double minSeconds, int minRuns, const JobContext* job) {
  return generationSpeeds(model, {std::move(ffn)}, prompt, newTokens, minSeconds, minRuns, job).front();
}

double forwardTokensPerSecond(Model& model, std::shared_ptr<const FfnOverride> ffn,
                              const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds,
                              const JobContext* job) {
  return forwardSpeed(model, std::move(ffn), sequences, batch, minSeconds, 3, job).median;
}

double generationTokensPerSecond(Model& model, std::shared_ptr<const FfnOverride> ffn,
                                 const std::vector<int64_t>& prompt, int newTokens, double minSeconds,
                                 const JobContext* job) {
  return generationSpeed(model, std::move(ffn), prompt, newTokens, minSeconds, 3, job).max;
}

}  // namespace moefy
