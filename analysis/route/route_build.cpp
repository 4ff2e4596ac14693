#include "analysis/route/route_build.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/io/links.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"

namespace moefy {

std::vector<std::shared_ptr<MoeLayerWeights>> packExperts(const Model& model, const PartitionData& part) {
  std::vector<std::shared_ptr<MoeLayerWeights>> out;
  for (size_t i = 0; i < part.layers.size(); ++i) {
    const Site& site = part.sites.at(i);
    FfnWeights w = model.ffnWeights(site);
    if (!w.up.defined())
      throw FormatError(model.dir().string() + ": site " + site.name() + " has no dense FFN weights to split");
    std::string ctx = (part.dir / "labels.safetensors").string() + ": " + site.name();
    const bool shared = i < part.shared.size() && part.shared[i] > 0;
    out.push_back(MoeLayerWeights::pack(w, ExpertLayout::fromLabels(part.labels[i], part.experts, ctx, shared)));
  }
  return out;
}

nlohmann::json routerMetrics(const at::Tensor& scores, const at::Tensor& mass, int k) {
  at::NoGradGuard ng;
  at::Tensor rsel = topKExperts(scores, k);           // [S, k]
  at::Tensor osel = topKExperts(mass, k);             // [S, k]
  double captured = mass.gather(1, rsel).sum().item<double>();
  double best = mass.gather(1, osel).sum().item<double>();
  const int64_t S = scores.size(0), E = scores.size(1);
  at::Tensor rm = at::zeros({S, E}, at::kFloat).scatter_(1, rsel, 1.0);
  at::Tensor om = at::zeros({S, E}, at::kFloat).scatter_(1, osel, 1.0);
  double overlap = (rm * om).sum().item<double>() / (double(S) * k);
  nlohmann::json j;
  j["mass_recall"] = best > 0 ? captured / best : 1.0;
  j["overlap"] = overlap;
  j["samples"] = S;
  return j;
}

void splitSamples(int64_t S, double heldOut, uint64_t seed, at::Tensor& train, at::Tensor& held) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(S, gen, at::kLong);
  int64_t h = static_cast<int64_t>(std::llround(heldOut * S));
  if (heldOut > 0 && h == 0 && S >= 2) h = 1;
  if (h >= S) h = S - 1;
  held = std::get<0>(perm.narrow(0, 0, h).sort());
  train = perm.narrow(0, h, S - h);
}

namespace {

// The training loop of the learned routers: Adam over `params`, per epoch a
// shuffled pass over the training samples in batches of o.batch minimising
// lossOf(sample indices), then the held-out loss (logged, and returned as
// {"epochs": [{"train", "held_out"}, ...]}).
nlohmann::json adamEpochs(std::vector<at::Tensor> params, const std::function<at::Tensor(const at::Tensor&)>& lossOf,
                          const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& o, JobContext& job,
                          const std::string& label) {
  if (o.epochs <= 0) throw ParameterError("--epochs must be positive");
  if (o.batch <= 0) throw ParameterError("--batch must be positive");
  if (!(o.lr > 0)) throw ParameterError("--lr must be positive");
  torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));
  auto heldLoss = [&]() -> double {
    if (heldIdx.numel() == 0) return NAN;
    at::NoGradGuard ng;
    return lossOf(heldIdx).item<double>();
  };
  nlohmann::json epochs = nlohmann::json::array();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 17);
  const int64_t n = trainIdx.numel();
  for (int ep = 0; ep < o.epochs; ++ep) {
    job.checkCancel();
    at::Tensor order = trainIdx.index_select(0, at::randperm(n, gen, at::kLong).to(trainIdx.device()));
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < n; b += o.batch) {
      at::Tensor idx = order.narrow(0, b, std::min<int64_t>(o.batch, n - b));
      at::Tensor loss = lossOf(idx);
      opt.zero_grad();
      loss.backward();
      opt.step();
      sum += loss.item<double>() * idx.numel();
      cnt += idx.numel();
      job.checkCancel();
    }
    double tr = cnt ? sum / cnt : NAN, he = heldLoss();
    epochs.push_back({{"train", tr}, {"held_out", std::isnan(he) ? nlohmann::json(nullptr) : nlohmann::json(he)}});
    std::ostringstream s;
    s << label << " epoch " << ep + 1 << "/" << o.epochs << ": train loss " << tr << ", held-out loss " << he;
    job.log(s.str());
  }
  return {{"epochs", epochs}};
}

// The mean L2 norm of the training rows of x (1 if none or ~0): the input
// scale of the routers trained on the raw FFN input.
double meanInputNorm(const at::Tensor& x, const at::Tensor& trainIdx) {
  const double s = trainIdx.numel() ? x.index_select(0, trainIdx).norm(2, {1}).mean().item<double>() : 1.0;
  return s > 1e-12 ? s : 1.0;
}

// BCE-with-logits of logitsOf(x rows) against the normalised oracle mass.
nlohmann::json trainRouterLoop(std::vector<at::Tensor> params,
                               const std::function<at::Tensor(const at::Tensor&)>& logitsOf, const at::Tensor& x,
                               const at::Tensor& mass, const at::Tensor& trainIdx, const at::Tensor& heldIdx,
                               const RouteOptions& o, JobContext& job, const std::string& label) {
  at::Tensor target = mass / mass.amax(1, true).clamp_min(1e-12);  // [S, E] in [0, 1]
  auto lossOf = [&](const at::Tensor& idx) {
    return at::binary_cross_entropy_with_logits(logitsOf(x.index_select(0, idx)), target.index_select(0, idx));
  };
  return adamEpochs(std::move(params), lossOf, trainIdx, heldIdx, o, job, label);
}

}  // namespace

nlohmann::json trainMlpRouter(LayerRouter& r, const at::Tensor& xRaw, const at::Tensor& mass,
                              const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& o,
                              JobContext& job, const std::string& label) {
  at::Tensor x = l2Normalize(xRaw.to(at::kFloat));
  at::Tensor w1 = r.w1.detach().clone().set_requires_grad(true);
  at::Tensor w2 = r.w2.detach().clone().set_requires_grad(true);
  auto logitsOf = [&](const at::Tensor& xb) { return at::mm(at::tanh(at::mm(xb, w1.t())), w2.t()); };
  nlohmann::json out = trainRouterLoop({w1, w2}, logitsOf, x, mass, trainIdx, heldIdx, o, job, label);
  r.w1 = w1.detach().contiguous();
  r.w2 = w2.detach().contiguous();
  return out;
}

nlohmann::json trainSigmoidRouter(LayerRouter& r, const at::Tensor& xRaw, const at::Tensor& mass,
                                  const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& o,
                                  JobContext& job, const std::string& label) {
  at::Tensor xf = xRaw.to(at::kFloat);
  // Trained as sigmoid((x / s) V^T) with s the mean ||x|| of the training
  // samples, so that Adam's steps have the scale they have for the mlp
  // router's unit inputs; stored as W1 = V / s, i.e. sigmoid(x W1^T).
  const double scale = meanInputNorm(xf, trainIdx);
  at::Tensor x = xf / scale;
  at::Tensor v = (r.w1.detach() * scale).clone().set_requires_grad(true);
  auto logitsOf = [&](const at::Tensor& xb) { return at::mm(xb, v.t()); };
  nlohmann::json out = trainRouterLoop({v}, logitsOf, x, mass, trainIdx, heldIdx, o, job, label);
  out["input_scale"] = scale;
  r.w1 = (v.detach() / scale).contiguous();
  return out;
}

nlohmann::json trainDynamicKRouter(LayerRouter& r, const at::Tensor& xRaw, const at::Tensor& norm,
                                   const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& o,
                                   JobContext& job, const std::string& label) {
  at::Tensor xf = xRaw.to(at::kFloat);
  const double scale = meanInputNorm(xf, trainIdx);  // as for the sigmoid router: W1 = V / s
  at::Tensor x = xf / scale;
  // Log-norm targets: the norms span orders of magnitude, and the selection
  // only needs their ranking and relative sizes.
  const double eps = std::max(1e-12, 1e-6 * norm.mean().item<double>());
  at::Tensor target = at::log(norm.to(at::kFloat) + eps);  // [S, E]
  at::Tensor v = (r.w1.detach() * scale).clone().set_requires_grad(true);
  at::Tensor b = r.b1.detach().clone().set_requires_grad(true);
  auto lossOf = [&](const at::Tensor& idx) {
    return at::mse_loss(at::addmm(b, x.index_select(0, idx), v.t()), target.index_select(0, idx));
  };
  nlohmann::json out = adamEpochs({v, b}, lossOf, trainIdx, heldIdx, o, job, label + " (log-norm MSE)");
  r.w1 = (v.detach() / scale).contiguous();
  r.b1 = b.detach().contiguous();
  out["input_scale"] = scale;
  out["log_eps"] = std::log(eps);
  return out;
}

nlohmann::json heldOutRouterMetrics(const Model& model, const PartitionData& part, const SampleData& samples, size_t i,
                                    const LayerRouter& r, const MoeLayerWeights& w, const RouteOptions& o, int k) {
  at::NoGradGuard ng;
  const int64_t S = samples.ffnIn.at(i).size(0);
  at::Tensor trainIdx, heldIdx;
  splitSamples(S, o.heldOut, o.seed, trainIdx, heldIdx);
  // Metrics on held-out samples (all samples when none are held out).
  at::Tensor evalIdx = heldIdx.numel() > 0 ? heldIdx : at::arange(S, at::kLong);
  const bool relu = plainReluFfn(model.config().act, model.config().gated);
  at::Tensor mass =
      expertMassFromHidden(samples.ffnAct.at(i).index_select(0, evalIdx), part.labels.at(i), part.experts, relu);
  at::Tensor scores = r.kind == RouterKind::Oracle ? mass : r.scores(samples.ffnIn[i].index_select(0, evalIdx), w);
  nlohmann::json j = routerMetrics(scores, mass, k);
  if (r.kind == RouterKind::DynamicK) {
    // The experts per token the router takes on these samples.
    at::Tensor sel = dynamicKExperts(scores, r.tau, r.minK, k);
    j["mean_k"] = (sel >= 0).sum(1).to(at::kDouble).mean().item<double>();
  }
  return j;
}

RouterSet buildRouters(const Model& model, const PartitionData& part, const SampleData& samples,
                       const RouteOptions& o, JobContext& job) {
  part.checkModel(model);
  samples.checkModel(model);
  const int E = part.experts;
  // Experts per token of every entry: one k for all (--top-k / --top-fraction),
  // or the per-layer k of a budget allocation.
  std::vector<int> ks = o.layerTopK;
  if (ks.empty()) {
    int k = o.topK;
    if (k == 0) {
      if (!(o.topFraction > 0 && o.topFraction <= 1))
        throw ParameterError("--top-fraction " + std::to_string(o.topFraction) + " outside (0, 1]");
      k = topKForFraction(o.topFraction, E);
    }
    if (k < 1 || k > E)
      throw ParameterError("--top-k " + std::to_string(k) + " outside [1, " + std::to_string(E) +
                           "] (the partition has " + std::to_string(E) + " experts)");
    ks.assign(part.layers.size(), k);
  }
  if (ks.size() != part.layers.size())
    throw ParameterError("per-layer top-k: " + std::to_string(ks.size()) + " values for " +
                         std::to_string(part.layers.size()) + " partitioned layers");
  for (int k : ks)
    if (k < 1 || k > E)
      throw ParameterError("per-layer top-k " + std::to_string(k) + " outside [1, " + std::to_string(E) + "]");
  if (!(o.heldOut >= 0 && o.heldOut < 1)) throw ParameterError("--held-out must be in [0, 1)");
  if (o.kind == RouterKind::DynamicK) {
    if (!(o.tau > 0 && o.tau <= 1)) throw ParameterError("--tau " + std::to_string(o.tau) + " outside (0, 1]");
    const int kMin = ks.empty() ? o.minK : *std::min_element(ks.begin(), ks.end());
    if (o.minK < 1 || o.minK > kMin)
      throw ParameterError("--min-k " + std::to_string(o.minK) + " outside [1, " + std::to_string(kMin) +
                           "] (the most experts per token, --top-k)");
  }
  job.setStage("route: pack experts");
  auto packed = packExperts(model, part);
  RouterSet rs;
  rs.kind = o.kind;
  rs.layers = part.layers;
  rs.sites = part.sites;
  for (const Site& site : part.sites)
    if (site.expert >= 0 || site.shared) {  // expert sites: what their indices derive from
      rs.modelLayers = model.config().nLayer;
      rs.nativeExperts = model.config().expertCount;
    }
  rs.modelFingerprint = model.fingerprint();
  rs.partitionPath = part.dir.string();
  rs.partitionLabelsHash = part.labelsHash;
  rs.provenance =
      provenanceBlock("route",
                      {{"router", routerKindName(o.kind)},
                       {"top_k", o.topK},
                       {"top_fraction", o.topFraction},
                       {"epochs", o.epochs},
                       {"batch", o.batch},
                       {"lr", o.lr},
                       {"held_out", o.heldOut},
                       {"tau", o.tau},
                       {"min_k", o.minK},
                       {"budget", o.budget},
                       {"allocate", o.budget > 0 ? o.allocate : std::string()},
                       {"seed", o.seed}},
                      {{"model", model.fingerprint()},
                       {"partition", folderFingerprint(part.dir)},
                       {"recording", samples.dir.empty() ? std::string() : folderFingerprint(samples.dir)}});
  const bool relu = plainReluFfn(model.config().act, model.config().gated);
  job.setStage(std::string("route: ") + routerKindName(o.kind));
  for (size_t i = 0; i < part.layers.size(); ++i) {
    job.checkCancel();
    const std::string key = siteJsonKey(part.sites.at(i)), what = part.sites.at(i).name();
    const MoeLayerWeights& w = *packed[i];
    // The site's own samples (the stacks of an encoder-decoder recording have
    // reservoirs of different sizes); the same seed gives every site of one
    // stack the same train/held-out rows.
    const int64_t S = samples.ffnIn[i].size(0);
    at::Tensor trainIdx, heldIdx;
    splitSamples(S, o.heldOut, o.seed, trainIdx, heldIdx);
    LayerRouter r;
    r.kind = o.kind;
    r.experts = E;
    at::Tensor mass = expertMassFromHidden(samples.ffnAct[i], part.labels[i], E, relu);  // [S, E]
    if (o.kind != RouterKind::Oracle) r.centroids = similarityCentroids(w).clone();
    // The learned routers train on o.device: their inputs, targets and sample indices go there.
    const c10::Device dev = o.device;
    const at::Tensor xDev = samples.ffnIn[i].to(dev), trainDev = trainIdx.to(dev), heldDev = heldIdx.to(dev);
    if (o.kind == RouterKind::Mlp) {
      r.w1 = r.centroids.to(dev);
      r.w2 = at::eye(E, at::TensorOptions().dtype(at::kFloat).device(dev));
      r.centroids = at::Tensor();
      JobContext* jp = &job;
      rs.training[key] = trainMlpRouter(r, xDev, mass.to(dev), trainDev, heldDev, o, *jp,
                                        part.sites[i].stack == SiteStack::Single ? "layer " + key : what);
    }
    if (o.kind == RouterKind::Sigmoid) {
      // Starts at the similarity centroids over the mean input norm: before
      // training it ranks the experts about as the similarity router does.
      const double s = samples.ffnIn[i].index_select(0, trainIdx).norm(2, {1}).mean().item<double>();
      r.w1 = (r.centroids / (s > 1e-12 ? s : 1.0)).contiguous().to(dev);
      r.centroids = at::Tensor();
      rs.training[key] = trainSigmoidRouter(r, xDev, mass.to(dev), trainDev, heldDev, o, job,
                                            part.sites[i].stack == SiteStack::Single ? "layer " + key : what);
    }
    if (o.kind == RouterKind::DynamicK) {
      // A linear head on the raw input predicting each expert's log output
      // norm, from zero weights and the mean log norm (Dense-to-Dynamic-k MoE
      // regresses the norms of the converted experts' outputs).
      at::Tensor norm;
      {
        at::NoGradGuard ng;
        norm = w.expertOutputNorm(samples.ffnAct[i].index_select(1, w.layout.perm));  // [S, E]
      }
      const double eps = std::max(1e-12, 1e-6 * norm.mean().item<double>());
      r.w1 = at::zeros({E, samples.ffnIn[i].size(1)}, at::TensorOptions().dtype(at::kFloat).device(dev));
      r.b1 = at::log(norm.index_select(0, trainIdx) + eps).mean(0).contiguous().to(dev);
      r.tau = o.tau;
      r.minK = o.minK;
      r.centroids = at::Tensor();
      rs.training[key] = trainDynamicKRouter(r, xDev, norm.to(dev), trainDev, heldDev, o, job,
                                             part.sites[i].stack == SiteStack::Single ? "layer " + key : what);
    }
    r = r.to(c10::kCPU);  // the trained router back on the host
    rs.metrics[key] = heldOutRouterMetrics(model, part, samples, i, r, w, o, ks[i]);
    rs.routers.push_back(std::move(r));
    rs.topK.push_back(ks[i]);
    rs.experts.push_back(E);
    job.setProgress(double(i + 1) / part.layers.size());
  }
  return rs;
}

}  // namespace moefy
