#include "analysis/calibrate/calibrate.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <random>
#include <sstream>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/sequences.h"
#include "analysis/io/links.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"

namespace moefy {

nlohmann::json CalibrateResult::toJson() const {
  return {{"lm_loss_before", lmLossBefore},
          {"lm_loss_after", lmLossAfter},
          {"router_loss_before", routerLossBefore},
          {"router_loss_after", routerLossAfter},
          {"train_loss", trainLoss}};
}

namespace {

// Captures the FFN inputs of the MoE layers (real tokens only).
class CaptureSink : public HookSink {
 public:
  CaptureSink(const MoeFfn& moe, at::Tensor rows) : moe_(moe), rows_(std::move(rows)) {}
  std::map<int, at::Tensor> x;  // layer -> [N, d_model]
  bool wants(int layer, HookPoint p) const override { return p == HookPoint::FfnIn && moe_.isMoe(layer); }
  void on(int layer, HookPoint, const at::Tensor& t) override {
    x[layer] = t.detach().reshape({-1, t.size(-1)}).index_select(0, rows_);
  }

 private:
  const MoeFfn& moe_;
  at::Tensor rows_;
};

}  // namespace

CalibrateResult calibrateMoe(Model& model, const std::vector<std::vector<int64_t>>& train,
                             const std::vector<std::vector<int64_t>>& heldIn, const CalibrateOptions& o,
                             JobContext& job) {
  auto base = std::dynamic_pointer_cast<const MoeFfn>(model.ffnOverride());
  if (!base) throw ParameterError("calibrate needs a MoE model (a folder written by 'moefy export')");
  if (o.steps <= 0) throw ParameterError("--steps must be positive");
  if (o.batch <= 0) throw ParameterError("--batch must be positive");
  if (!(o.lr > 0)) throw ParameterError("--lr must be positive");
  if (train.empty()) throw ParameterError("calibrate: no training sequences");
  const ModelConfig& c = model.config();
  if (c.encoderDecoder)
    throw ParameterError("calibrate: " + c.modelType +
                         " is an encoder-decoder model; calibrating its MoE export (teacher-forced pairs) is not "
                         "supported yet");
  if (!c.causal && o.maskTokenId < 0) throw ParameterError("masked-LM calibration needs the tokenizer's [MASK] token");
  const auto& heldOut = heldIn.empty() ? train : heldIn;

  RouterKind kind = RouterKind::Oracle;
  for (const auto& l : base->layers())
    if (l.weights) kind = l.router->kind;
  const bool trainRouters = kind != RouterKind::Oracle;
  if (!trainRouters && !o.experts)
    throw ParameterError("oracle routers have no parameters to calibrate; add --experts to fine-tune the experts");

  if (o.experts && !model.trainable()) model.makeTrainable();
  // Trainable copies of the routers (and experts).
  std::vector<at::Tensor> params;
  std::vector<MoeLayer> layers = base->layers();
  for (auto& l : layers) {
    if (!l.weights) continue;
    auto w = std::make_shared<MoeLayerWeights>(*l.weights);
    auto own = [&](at::Tensor& t, bool grad) {
      if (!t.defined()) return;
      t = t.detach().clone().set_requires_grad(grad);
      if (grad) params.push_back(t);
    };
    own(w->up, o.experts);
    own(w->gate, o.experts);
    own(w->upBias, o.experts);
    own(w->downT, o.experts);
    own(w->downBias, o.experts);
    auto r = std::make_shared<LayerRouter>(*l.router);
    own(r->w1, trainRouters);
    own(r->w2, trainRouters);
    own(r->centroids, trainRouters);
    own(r->b1, trainRouters);
    l.weights = w;
    l.router = r;
  }
  // Keep the base's site list: without it an encoder-decoder MoE would be keyed blk.L.
  auto moe = std::make_shared<MoeFfn>(layers, base->dense(), base->sites());
  model.setFfnOverride(moe);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));
  std::mt19937_64 rng(o.seed);

  // One pass over a batch: LM loss (with grad when experts train) and router loss.
  auto pass = [&](const std::vector<std::vector<int64_t>>& seqs, bool withGrad, double& lm, double& rl) -> at::Tensor {
    std::mt19937_64 maskRng = withGrad ? std::mt19937_64(rng()) : std::mt19937_64(o.seed + 99);
    ScoredBatch sb = makeScoredBatch(seqs, c.causal, o.maskTokenId, 0.15, maskRng);
    at::Tensor rows = sb.batch.mask.reshape({-1}).nonzero().reshape({-1});
    CaptureSink sink(*moe, rows.to(model.device()));  // moved once, beside the hooks
    at::Tensor total;
    std::optional<at::NoGradGuard> ng;
    if (!withGrad || !o.experts) ng.emplace();
    at::Tensor logits = model.forward(sb.batch, &sink);
    if (sb.row.numel() == 0) throw ParameterError("calibrate: sequences too short to score");
    const c10::Device dev = logits.device();  // the model's (--device)
    at::Tensor lmLoss = at::cross_entropy_loss(logits.index({sb.row.to(dev), sb.pos.to(dev)}), sb.target.to(dev));
    lm = lmLoss.item<double>();
    ng.reset();
    std::optional<at::NoGradGuard> ng2;
    if (!withGrad) ng2.emplace();
    at::Tensor rLoss = at::zeros({}, logits.options().dtype(at::kFloat));
    int n = 0;
    for (auto& [L, xInf] : sink.x) {
      const auto& ml = moe->layers()[L];
      at::Tensor x = xInf.clone();  // a normal tensor even if captured in inference mode
      at::Tensor target;
      const bool dynamicK = ml.router->kind == RouterKind::DynamicK;
      {
        at::NoGradGuard g;
        if (dynamicK) {
          // The dynamic-k head regresses the experts' log output norms (route_build.h trainDynamicKRouter).
          at::Tensor norm = ml.weights->expertOutputNorm(ml.weights->packedHidden(x)).detach();
          target = at::log(norm + std::max(1e-12, 1e-6 * norm.mean().item<double>()));
        } else {
          at::Tensor mass = ml.weights->expertMass(ml.weights->packedHidden(x)).detach();
          target = mass / mass.amax(1, true).clamp_min(1e-12);
        }
      }
      if (trainRouters)
        rLoss = rLoss + (dynamicK ? at::mse_loss(ml.router->logits(x), target)
                                  : at::binary_cross_entropy_with_logits(ml.router->logits(x), target));
      ++n;
    }
    if (n) rLoss = rLoss / n;
    rl = rLoss.item<double>();
    if (!withGrad) return {};
    total = rLoss;
    if (o.experts) total = total + lmLoss;
    return total;
  };
  auto evaluate = [&](double& lm, double& rl) {
    double slm = 0, srl = 0;
    int nb = 0;
    for (size_t b0 = 0; b0 < heldOut.size(); b0 += o.batch) {
      std::vector<std::vector<int64_t>> seqs(heldOut.begin() + b0, heldOut.begin() + std::min(heldOut.size(), b0 + o.batch));
      double a = 0, b = 0;
      pass(seqs, false, a, b);
      slm += a, srl += b, ++nb;
      job.checkCancel();
    }
    lm = slm / nb;
    rl = srl / nb;
  };

  CalibrateResult res;
  job.setStage("calibrate: evaluate before");
  evaluate(res.lmLossBefore, res.routerLossBefore);
  job.setStage("calibrate: train");
  std::vector<size_t> order(train.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  size_t cursor = 0;
  for (int step = 0; step < o.steps; ++step) {
    job.checkCancel();
    std::vector<std::vector<int64_t>> seqs;
    for (int b = 0; b < o.batch; ++b) {
      if (cursor == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      seqs.push_back(train[order[cursor++]]);
    }
    double lm = 0, rl = 0;
    at::Tensor loss = pass(seqs, true, lm, rl);
    opt.zero_grad();
    loss.backward();
    opt.step();
    res.trainLoss.push_back(loss.item<double>());
    if ((step + 1) % std::max(1, o.steps / 10) == 0 || step + 1 == o.steps) {
      std::ostringstream s;
      s << "step " << step + 1 << "/" << o.steps << ": router loss " << rl << ", LM loss " << lm;
      job.log(s.str());
    }
    job.setProgress(double(step + 1) / o.steps);
  }
  job.setStage("calibrate: evaluate after");
  evaluate(res.lmLossAfter, res.routerLossAfter);
  return res;
}

nlohmann::json runCalibration(const std::filesystem::path& moeDir, const std::filesystem::path& corpus,
                              CalibrateOptions o, int seqLen, int64_t tokens, Split split,
                              const std::filesystem::path& out, bool force, JobContext& job) {
  if (std::filesystem::exists(out) && !force)
    throw IoError(out.string() + ": already exists (use --force to replace it)");
  job.setStage("load model");
  auto loaded = loadModel(moeDir, o.device);
  if (!loaded.isMoe()) throw ParameterError(moeDir.string() + ": not a MoE export (run 'moefy export' first)");
  o.maskTokenId = maskTokenIdOf(loaded);
  job.setStage("read corpus");
  auto seqs = readSequences(corpus, loaded, seqLen, tokens, split, &job);
  // Every tenth sequence is held out for the before/after figures.
  std::vector<std::vector<int64_t>> train, held;
  for (size_t i = 0; i < seqs.size(); ++i) (i % 10 == 9 ? held : train).push_back(seqs[i]);
  if (train.empty()) train = held;
  CalibrateResult r = calibrateMoe(*loaded.model, train, held, o, job);
  nlohmann::json block = loaded.moefication;
  // The source export's links are relative to its folder: re-express them for `out`.
  for (const char* key : {"source_model", "partition"})
    if (block.contains(key) && block[key].is_object()) block[key] = relink(moeDir, out, block[key]);
  block["calibration"] = {{"steps", o.steps},
                          {"experts", o.experts},
                          {"lr", o.lr},
                          {"corpus", makeLink(out, corpus, "")["path"]},
                          {"source", makeLink(out, moeDir, folderFingerprint(moeDir))},
                          {"lm_loss_before", r.lmLossBefore},
                          {"lm_loss_after", r.lmLossAfter},
                          {"router_loss_before", r.routerLossBefore},
                          {"router_loss_after", r.routerLossAfter}};
  auto moe = std::dynamic_pointer_cast<const MoeFfn>(loaded.model->ffnOverride());
  RouterKind kind = routerKindFromName(loaded.moefication.value("router", "oracle"), "moefication.router");
  writeMoeFolder(*loaded.model, *moe, kind, block, out, force, job);
  nlohmann::json j = r.toJson();
  j["out"] = out.string();
  return j;
}

}  // namespace moefy
