#include "views/artefacts.h"

#include <ATen/ATen.h>

#include <QDir>
#include <QFileInfo>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "analysis/analyze/moe_analysis.h"
#include "analysis/analyze/moe_stats.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval_data.h"
#include "analysis/eval/eval_file.h"
#include "analysis/eval/eval_results.h"
#include "analysis/eval/front.h"
#include "analysis/eval/generate.h"
#include "analysis/eval/sequences.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "analysis/project/artefact.h"
#include "analysis/project/data_overlap.h"
#include "analysis/project/project.h"
#include "analysis/record/recording.h"
#include "analysis/record/sample_context.h"
#include "analysis/route/router.h"
#include "analysis/route/router_scores.h"
#include "analysis/split/split.h"
#include "analysis/text/tokenizer.h"

namespace moefy::views {

namespace {

std::filesystem::path P(const QString& s) { return std::filesystem::path(s.toStdString()); }

QString Q(const std::filesystem::path& p) { return QString::fromStdString(p.string()); }

template <typename T>
std::vector<T> toVector(const at::Tensor& t0, at::ScalarType st) {
  at::Tensor t = t0.to(st).contiguous();
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), t.data_ptr(), out.size() * sizeof(T));
  return out;
}

moefy::Workspace toCore(const Workspace& w) {
  moefy::Workspace c;
  c.dir = P(w.dir);
  c.name = w.name.toStdString();
  c.modelPath = w.modelPath.toStdString();
  c.corpusPath = w.corpusPath.toStdString();
  c.evalCorpusPath = w.evalCorpusPath.toStdString();
  c.settings = w.settings;
  for (const auto& [k, v] : w.folders) c.folders[k] = v.toStdString();
  return c;
}

Workspace fromCore(const moefy::Workspace& c) {
  Workspace w;
  w.dir = Q(c.dir);
  w.name = QString::fromStdString(c.name);
  w.modelPath = QString::fromStdString(c.modelPath);
  w.corpusPath = QString::fromStdString(c.corpusPath);
  w.evalCorpusPath = QString::fromStdString(c.evalCorpusPath);
  w.settings = c.settings;
  for (const auto& [k, v] : c.folders) w.folders[k] = QString::fromStdString(v);
  return w;
}

}  // namespace

// ---------------------------------------------------------------- Workspace

const QStringList& Workspace::kinds() {
  static const QStringList k = [] {
    QStringList out;
    for (const auto& f : moefy::Workspace::folderKinds()) out << QString::fromStdString(f);
    return out;
  }();
  return k;
}

QString Workspace::resolve(const QString& path) const { return Q(toCore(*this).resolve(path.toStdString())); }

QString Workspace::folder(const std::string& kind) const { return Q(toCore(*this).folder(kind)); }

QString Workspace::evalCorpus() const { return Q(toCore(*this).evalCorpus()); }

bool Workspace::separateEvalCorpus() const { return toCore(*this).separateEvalCorpus(); }

Workspace Workspace::load(const QString& d) { return fromCore(moefy::Workspace::load(P(d))); }

Workspace Workspace::create(const QString& d, const QString& name, const QString& model, const QString& corpus) {
  return fromCore(moefy::Workspace::create(P(d), name.toStdString(), model.toStdString(), corpus.toStdString()));
}

nlohmann::json Workspace::toJson() const { return toCore(*this).toJson(); }

void Workspace::save() const { toCore(*this).save(); }

std::vector<ArtefactRef> scanArtefacts(const Workspace& ws) {
  moefy::Project project(toCore(ws));
  project.scan(true);
  std::vector<ArtefactRef> out;
  for (const auto& a : project.artefacts()) {
    // The studio lists calibrated exports with the exports (one tree node).
    const ArtefactKind k = a.kind == ArtefactKind::CalibratedExport ? ArtefactKind::MoeExport : a.kind;
    out.push_back({QString::fromUtf8(artefactKindInfo(k).name), Q(a.dir), QString::fromStdString(a.name),
                   QString::fromStdString(a.summary), a.readable});
  }
  return out;
}

QStringList linkProblems(const Workspace& ws) {
  moefy::Project project(toCore(ws));
  project.scan(false);
  QStringList out;
  for (const auto& l : project.linkProblems()) out << QString::fromStdString(l.message);
  return out;
}

// ---------------------------------------------------------------- Recording

std::shared_ptr<Recording> Recording::open(const QString& d) {
  auto core = std::make_shared<const moefy::Recording>(moefy::Recording::open(P(d)));
  auto r = std::make_shared<Recording>();
  r->core_ = core;
  r->dir = QFileInfo(d).absoluteFilePath();
  r->manifest = core->manifest();
  r->tokens = core->tokens();
  r->dFF = core->dFF();
  r->dModel = core->dModel();
  r->layers = core->layers();
  r->sites = core->sites();
  for (const auto& c : core->categories()) r->categories << QString::fromStdString(c);
  r->plainRelu = plainReluFfn(core->manifest().value("model", nlohmann::json::object()));
  if (r->tokens <= 0) throw FormatError((P(d) / "manifest.json").string() + ": tokens is missing or not positive");
  for (int L : r->layers) {
    // An encoder-decoder recording counts each stack's tokens apart: a site's
    // means, frequencies and sparsity are over its own stream. An expert site
    // of a native MoE recording counts the tokens routed to it (maybe none)
    // and has its own width (d_expert, d_shared).
    const moefy::Site site = core->site(L);
    const int64_t T = core->tokens(L), counted = core->siteTokens(L);
    if (T <= 0 || counted < 0 || (counted == 0 && site.expert < 0))
      throw FormatError((P(d) / "manifest.json").string() + ": the tokens of site " + site.name() +
                        " are missing or not positive");
    const int64_t F = core->width(L);
    r->siteTokens_[L] = T;
    r->countedTokens_[L] = counted;
    r->width_[L] = static_cast<int>(F);
    LayerStats s;
    s.count = toVector<int64_t>(core->count(L), at::kLong);
    std::vector<double> sum = toVector<double>(core->sum(L), at::kDouble);
    s.mean.assign(F, 0.0);
    if (counted > 0)
      for (int64_t i = 0; i < F; ++i) s.mean[i] = sum[i] / static_cast<double>(counted);
    s.max = toVector<double>(core->max(L), at::kDouble);
    s.activeHist = toVector<int64_t>(core->activeHist(L), at::kLong);
    if (!r->categories.isEmpty()) {
      s.categoryCount = toVector<int64_t>(core->categoryCount(L), at::kLong);
      s.categoryTokens = toVector<int64_t>(core->categoryTokens(L), at::kLong);
    }
    // An expert no token was routed to has no sparsity to speak of: zeros, 0 tokens.
    if (counted > 0)
      r->sparsity[L] = layerSparsity(s.count, s.activeHist, counted);
    else
      r->sparsity[L] = LayerSparsity{}, r->sparsity[L].dFF = static_cast<int>(F);
    r->stats[L] = std::move(s);
  }
  r->hasCoact_ = true;  // the core reader has checked every layer's coact tensor
  r->hasSamples_ = core->sampleCount() > 0;
  return r;
}

std::shared_ptr<const std::vector<int32_t>> Recording::coact(int layer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = coact_.find(layer);
  if (it != coact_.end()) return it->second;
  auto v = std::make_shared<const std::vector<int32_t>>(toVector<int32_t>(core_->coact(layer), at::kInt));
  coact_[layer] = v;
  return v;
}

moefy::Site Recording::siteOf(int layer) const {
  for (size_t i = 0; i < layers.size() && i < sites.size(); ++i)
    if (layers[i] == layer) return sites[i];
  return moefy::Site::ofLayer(layer);
}

int64_t Recording::tokensOf(int layer) const {
  auto it = siteTokens_.find(layer);
  return it != siteTokens_.end() ? it->second : tokens;
}

int64_t Recording::siteTokensOf(int layer) const {
  auto it = countedTokens_.find(layer);
  return it != countedTokens_.end() ? it->second : tokensOf(layer);
}

int Recording::widthOf(int layer) const {
  auto it = width_.find(layer);
  return it != width_.end() ? it->second : dFF;
}

std::vector<int64_t> Recording::sampleRows(int layer) const {
  if (!hasSamples_ || std::find(layers.begin(), layers.end(), layer) == layers.end() || siteOf(layer).expert < 0)
    return {};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routedRows_.find(layer);
  if (it != routedRows_.end()) return it->second;
  const at::Tensor rows = (core_->sampleRouted(layer).to(at::kInt) != 0).nonzero().reshape({-1});
  return routedRows_.emplace(layer, toVector<int64_t>(rows, at::kLong)).first->second;
}

QString siteText(const moefy::Site& s, int layer, bool capital) {
  if (s.stack == moefy::SiteStack::Single && s.expert < 0 && !s.shared)
    return QString(capital ? "Layer %1" : "layer %1").arg(layer);
  return QString::fromStdString(s.name());
}

bool Recording::isExpertSite(int layer) const {
  return std::find(layers.begin(), layers.end(), layer) != layers.end() && siteOf(layer).expert >= 0;
}

QString Recording::siteText(int layer, bool capital) const { return views::siteText(siteOf(layer), layer, capital); }

const Recording::Samples& Recording::samples() const { return streamSamples(layers.empty() ? -1 : layers.front()); }

const Recording::Samples& Recording::samples(int layer) const {
  if (layer < 0) return samples();
  const Samples& stream = streamSamples(layer);
  const bool recorded = std::find(layers.begin(), layers.end(), layer) != layers.end();
  if (!recorded || siteOf(layer).expert < 0) return stream;
  // An expert site: the sampled tokens routed to the expert, a subset of the stream's.
  const std::vector<int64_t> rows = sampleRows(layer);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = expertSamples_.find(layer);
  if (it != expertSamples_.end()) return it->second;
  Samples s;
  for (int64_t i : rows) {
    if (i < 0 || i >= stream.count()) continue;
    s.tokenId.push_back(stream.tokenId[size_t(i)]);
    s.docId.push_back(stream.docId[size_t(i)]);
    s.position.push_back(stream.position[size_t(i)]);
    s.category.push_back(stream.category[size_t(i)]);
  }
  return expertSamples_.emplace(layer, std::move(s)).first->second;
}

const Recording::Samples& Recording::streamSamples(int layer) const {
  const bool recorded = std::find(layers.begin(), layers.end(), layer) != layers.end();
  // One reservoir per stack: the sites of a stack share their sampled tokens.
  const moefy::SiteStack stack = recorded ? siteOf(layer).stack : moefy::SiteStack::Single;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = samples_.find(stack);
  if (it != samples_.end()) return it->second;
  Samples s;
  if (hasSamples_ && recorded) {
    s.tokenId = toVector<int32_t>(core_->sampleTokenIds(layer), at::kInt);
    s.docId = toVector<int64_t>(core_->sampleDocIds(layer), at::kLong);
    s.position = toVector<int32_t>(core_->samplePositions(layer), at::kInt);
    s.category = toVector<int32_t>(core_->sampleCategories(layer), at::kInt);
  }
  return samples_.emplace(stack, std::move(s)).first->second;
}

namespace {
// The rows `rows` of t [S, n] (all of them when empty), as F32.
at::Tensor sampleRowsOf(const at::Tensor& t, const std::vector<int64_t>& rows, bool subset) {
  if (!subset) return t.to(at::kFloat);
  return t.index_select(0, at::tensor(rows, at::kLong)).to(at::kFloat);
}
}  // namespace

std::shared_ptr<const std::vector<float>> Recording::sampleAct(int layer) const {
  const bool subset = isExpertSite(layer);
  const std::vector<int64_t> rows = sampleRows(layer);
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = "site." + std::to_string(layer) + ".ffn_act";
  auto it = sampleCache_.find(key);
  if (it != sampleCache_.end()) return it->second;
  auto v = std::make_shared<const std::vector<float>>(
      toVector<float>(sampleRowsOf(core_->sampleFfnAct(layer), rows, subset), at::kFloat));
  sampleCache_[key] = v;
  return v;
}

std::shared_ptr<const std::vector<float>> Recording::sampleIn(int layer) const {
  const bool subset = isExpertSite(layer);
  const std::vector<int64_t> rows = sampleRows(layer);
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = "site." + std::to_string(layer) + ".ffn_in";
  auto it = sampleCache_.find(key);
  if (it != sampleCache_.end()) return it->second;
  auto v = std::make_shared<const std::vector<float>>(
      toVector<float>(sampleRowsOf(core_->sampleFfnIn(layer), rows, subset), at::kFloat));
  sampleCache_[key] = v;
  return v;
}

// ---------------------------------------------------------------- Partition

std::shared_ptr<Partition> Partition::open(const QString& d) {
  auto core = std::make_shared<const moefy::Partition>(moefy::Partition::open(P(d)));
  auto p = std::make_shared<Partition>();
  p->core = core;
  p->dir = QFileInfo(d).absoluteFilePath();
  p->name = QFileInfo(d).fileName();
  p->meta = core->json();
  p->method = QString::fromStdString(core->method());
  p->seed = static_cast<int>(core->json().value("seed", static_cast<int64_t>(0)));
  p->experts = core->experts();
  p->dFF = core->dFF();
  p->fingerprint = QString::fromStdString(core->fingerprint());
  for (int L : core->layers()) {
    p->labels[L] = core->labels(L);
    p->perm[L] = toVector<int32_t>(core->perm(L), at::kInt);
    p->sites[L] = core->site(L);
  }
  return p;
}

double Partition::metric(int layer, const std::string& key) const { return partitionMetric(meta, layer, key); }

std::vector<double> Partition::recallAtK(int layer) const { return partitionRecallAtK(meta, layer); }

std::vector<int> Partition::sizes(int layer) const {
  std::vector<int> s(experts, 0);
  auto it = labels.find(layer);
  if (it != labels.end())
    for (int32_t v : it->second)
      if (v >= 0 && v < experts) ++s[v];  // label E: the shared expert (split --shared), not a routed one
  return s;
}

// ---------------------------------------------------------------- Router

std::shared_ptr<Router> Router::open(const QString& d) {
  auto core = std::make_shared<const RouterSet>(RouterSet::read(P(d)));
  auto r = std::make_shared<Router>();
  r->core = core;
  r->dir = QFileInfo(d).absoluteFilePath();
  r->name = QFileInfo(d).fileName();
  r->meta = nlohmann::json::object();
  r->kind = QString::fromUtf8(routerKindName(core->kind));
  r->layers = core->layers;
  r->topK = core->topK;
  r->experts = core->experts.empty() ? 0 : *std::max_element(core->experts.begin(), core->experts.end());
  r->partitionPath = QString::fromStdString(core->partitionPath);  // resolved by the core reader
  for (const auto& lr : core->routers) {
    const at::Tensor& t = lr.kind == RouterKind::Similarity ? lr.centroids : lr.w1;
    if (t.defined() && t.dim() == 2) r->dModel = static_cast<int>(t.size(1));
  }
  r->trained = routerKindTrained(core->kind);
  r->lossName = QString::fromUtf8(routerLossName(core->kind));
  for (size_t i = 0; i < core->layers.size(); ++i) r->sites.push_back(core->siteAt(i));
  // The diagnostics blocks (training, metrics) are validated by the core; a
  // malformed one leaves the router usable for routing, with the error kept.
  try {
    for (size_t i = 0; i < core->layers.size(); ++i) {
      const RouterSiteReport c = core->siteReport(i);
      r->reports.push_back({c.trainLoss, c.heldOutLoss, c.massRecall, c.overlap, c.samples, c.meanK});
    }
  } catch (const moefy::Error& e) {
    r->reports.clear();
    r->reportError = QString::fromStdString(e.what());
  }
  return r;
}

const Router::SiteReport* Router::reportFor(int layer) const {
  for (size_t i = 0; i < layers.size() && i < reports.size(); ++i)
    if (layers[i] == layer) return &reports[i];
  return nullptr;
}

LoadBalance routerLoadBalance(const moefy::RouterChoices& c) {
  const int S = c.samples, E = c.experts, k = c.k;
  if (S <= 0 || E <= 0) throw ParameterError("router load balance: no sampled tokens or no experts");
  Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> chosen =
      Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Zero(S, E);  // [S, E]
  for (int s = 0; s < S; ++s)
    for (int j = 0; j < k; ++j) {
      const size_t at = static_cast<size_t>(s) * k + j;
      const int e = at < c.top.size() ? c.top[at] : -1;
      if (e >= 0 && e < E) chosen(s, e) = 1;
    }
  const UsageHealth h = usageHealth(chosen);
  LoadBalance b;
  b.perplexity = h.perplexity;
  b.deadShare = h.deadShare;
  b.dead = static_cast<int>(std::lround(h.deadShare * E));
  b.experts = E;
  b.tokens = S;
  return b;
}

int Router::topKFor(int layer) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i] == layer && i < topK.size()) return topK[i];
  return topK.empty() ? 1 : topK.front();
}

bool Router::hasLayer(int layer) const { return std::find(layers.begin(), layers.end(), layer) != layers.end(); }

moefy::RouterChoices routeRecordedSamples(const Recording& rec, const Router* router, const Partition& part, int layer,
                                          int k) {
  const auto core = rec.core();
  if (!core) throw FormatError(rec.dir.toStdString() + ": recording not opened");
  if (!part.core) throw FormatError(part.dir.toStdString() + ": partition not opened");
  // At an expert site, the sampled tokens routed to it (Recording::samples(layer)'s rows).
  const bool subset = rec.isExpertSite(layer);
  const std::vector<int64_t> rows = rec.sampleRows(layer);
  if (subset && rows.empty())
    throw FormatError(rec.dir.toStdString() + ": no sampled token was routed to " + rec.siteOf(layer).name());
  return routeSamples(router ? router->core.get() : nullptr, layer, part.core->labelsTensor(layer), part.experts, k,
                      sampleRowsOf(core->sampleFfnIn(layer), rows, subset),
                      sampleRowsOf(core->sampleFfnAct(layer), rows, subset), rec.plainRelu);
}

moefy::RouterChoices routeTypedText(const TextActivations& t, const Router* router, const Partition& part, int layer,
                                    int k) {
  if (!part.core) throw FormatError(part.dir.toStdString() + ": partition not opened");
  const int64_t T = static_cast<int64_t>(t.ids.size());
  // from_blob views of the (const) vectors: routeSamples only reads them.
  at::Tensor in = at::from_blob(const_cast<float*>(t.in.data()), {T, t.dModel}, at::kFloat);
  at::Tensor act = at::from_blob(const_cast<float*>(t.act.data()), {T, t.dFF}, at::kFloat);
  return routeSamples(router ? router->core.get() : nullptr, layer, part.core->labelsTensor(layer), part.experts, k, in,
                      act, t.reluLike);
}

// ---------------------------------------------------------------- Evaluation

std::shared_ptr<Evaluation> Evaluation::open(const QString& d) {
  const EvalResults core = EvalResults::read(P(d));
  auto e = std::make_shared<Evaluation>();
  e->dir = QFileInfo(d).absoluteFilePath();
  e->meta = core.json;
  e->densePpl = core.densePerplexity;
  e->denseLoss = core.denseLoss;
  e->hasSpeed = core.hasSpeed;
  e->hasGenSpeed = core.hasGenerateSpeed;
  for (const auto& s : core.series) {
    Series out{QString::fromStdString(s.router), {}};
    for (const auto& p : s.points) {
      out.points.push_back({p.fraction, QString::fromStdString(p.topK), p.loss, p.perplexity, p.lossDelta, p.top1, p.kl,
                            p.forwardSpeedup, p.generateSpeedup, p.forwardSpeedupMin, p.forwardSpeedupMax,
                            p.generateSpeedupMin, p.generateSpeedupMax, p.forwardRuns, p.generateRuns,
                            QString::fromStdString(p.speedNote), p.ffnFlopsFraction, p.layerRelError});
    }
    e->series.push_back(std::move(out));
  }
  for (const std::string& s : core.siteNames) e->siteNames << QString::fromStdString(s);
  e->dataCaption = QString::fromStdString(core.dataCaption());
  e->dataSubtitle = QString::fromStdString(core.dataCaption(true));
  // The recordings behind its routers that read the same documents (metadata only).
  for (const RecordingOverlap& o : evaluationOverlaps(core.json, P(e->dir))) {
    if (o.overlap.verdict == DataOverlap::Overlap)
      e->overlaps << QString::fromStdString(o.message);
    else if (o.overlap.verdict == DataOverlap::Unknown)
      e->possibleOverlaps << QString::fromStdString(o.message);
  }
  return e;
}

// ---------------------------------------------------------------- Front

std::shared_ptr<Front> Front::open(const QString& d) {
  auto core = std::make_shared<const FrontResult>(readFront(P(d)));
  auto f = std::make_shared<Front>();
  f->dir = QFileInfo(d).absoluteFilePath();
  f->name = QFileInfo(d).fileName();
  f->core = core;
  // Every method's evaluation read the same held-out sequences: the first
  // readable one says which, in the words of the Evaluation view.
  for (const FrontMethod& m : core->methods) {
    if (m.eval.empty()) continue;
    try {
      const EvalResults e = EvalResults::read(P(d) / m.eval);
      f->dataCaption = QString::fromStdString(e.dataCaption());
      f->dataSubtitle = QString::fromStdString(e.dataCaption(true));
      break;
    } catch (const std::exception&) {
      // a front copied without its evaluations: described from front.json below
    }
  }
  if (f->dataCaption.isEmpty()) {
    // front.json's own record of the data (validated keys only; missing or
    // other-typed ones stay "not recorded").
    const nlohmann::json& doc = core->document;
    DataSelection data;
    if (doc.contains("heldout_corpus") && doc["heldout_corpus"].is_string())
      data.corpus = std::filesystem::path(doc["heldout_corpus"].get<std::string>()).lexically_normal();
    const nlohmann::json opt =
        doc.contains("options") && doc["options"].is_object() ? doc["options"] : nlohmann::json();
    auto integer = [&](const char* key) {
      return opt.contains(key) && opt[key].is_number_integer() ? opt[key].get<int64_t>() : int64_t{-1};
    };
    if (opt.contains("split") && opt["split"].is_string()) {
      try {
        data.split = parseSplitName(opt["split"].get<std::string>(), "front.json options.split");
      } catch (const std::exception&) {
        // an unknown split name: left "not recorded"
      }
    }
    if (integer("eval_tokens") > 0) data.tokens = integer("eval_tokens");
    if (integer("seq_len") > 0) data.seqLen = static_cast<int>(integer("seq_len"));
    data.seed = integer("seed");
    f->dataCaption = QString::fromStdString(describeData(data));
    f->dataSubtitle = QString::fromStdString(describeData(data, true));
  }
  return f;
}

// ---------------------------------------------------------------- Analysis

const Analysis::Matrix* Analysis::Layer::matrix(const std::string& name) const {
  auto it = matrices.find(name);
  return it == matrices.end() ? nullptr : &it->second;
}

double Analysis::Layer::scalar(std::initializer_list<const char*> path) const {
  const nlohmann::json* j = &scalars;
  for (const char* key : path) {
    if (!j->is_object() || !j->contains(key)) return std::numeric_limits<double>::quiet_NaN();
    j = &(*j)[key];
  }
  return j->is_number() ? j->get<double>() : std::numeric_limits<double>::quiet_NaN();
}

namespace {
Analysis::Matrix toMatrix(const at::Tensor& raw) {
  const at::Tensor t = raw.to(at::kDouble).contiguous();
  Analysis::Matrix m;
  m.rows = static_cast<int>(t.size(0));
  m.cols = t.dim() == 2 ? static_cast<int>(t.size(1)) : 1;
  m.values.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  return m;
}
}  // namespace

std::shared_ptr<Analysis> Analysis::open(const QString& d) {
  const moefy::MoeAnalysis core = moefy::readMoeAnalysis(P(d));
  auto a = std::make_shared<Analysis>();
  a->dir = QFileInfo(d).absoluteFilePath();
  a->name = QFileInfo(d).fileName();
  a->meta = core.meta;
  const std::string where = (P(d) / "analysis.json").string();
  const std::string file = (P(d) / "analysis.safetensors").string();
  // The drawn tensors: every listed one of 1 or 2 dimensions but the
  // chosen-expert table and the transitions (per token / per layer pair).
  std::map<std::string, size_t> listed;  // name -> number of dimensions (validated by the reader)
  for (const auto& [name, shape] : core.meta["tensors"].items()) listed[name] = shape.size();
  for (const auto& [key, scalars] : core.meta["sites"].items()) {
    const std::optional<moefy::Site> site = moefy::Site::tryParse(key);
    if (!site || site->stack != moefy::SiteStack::Single || site->expert >= 0 || site->shared)
      throw FormatError(where + ": sites." + key + ": not a MoE layer site blk.L");
    Layer L;
    L.site = *site;
    L.scalars = scalars;
    const std::string prefix = key + ".";
    for (const auto& [name, dims] : listed) {
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string tail = name.substr(prefix.size());
      if (tail == "chosen" || tail == "transition" || tail == "match_perm") continue;
      if (tail == "pca.neuron_expert") {
        const at::Tensor t = core.tensor(name).to(at::kInt).contiguous();
        L.neuronExpert.assign(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
        continue;
      }
      if (dims == 0 || dims > 2) continue;
      L.matrices[tail] = toMatrix(core.tensor(name));
    }
    L.experts = scalars.is_object() && scalars.contains("experts") && scalars["experts"].is_number_integer()
                    ? scalars["experts"].get<int>()
                    : 0;
    if (const Matrix* sim = L.matrix("mean_sim.up"); L.experts <= 0 && sim) L.experts = sim->rows;
    // Every E x E panel is indexed by expert: a matrix of another shape would
    // draw experts that do not exist.
    for (const auto& [tail, m] : L.matrices) {
      const bool square = tail.rfind("pca.", 0) != 0 && tail != "usage" && tail != "channel_usage";
      if ((square && (m.rows != L.experts || m.cols != L.experts)) ||
          (!square && tail != "pca.neurons" && m.rows != L.experts))
        throw FormatError(file + ": tensor '" + prefix + tail + "' has " + std::to_string(m.rows) + " rows, " + key +
                          " has " + std::to_string(L.experts) + " experts");
    }
    if (const Matrix* n = L.matrix("pca.neurons"); n && n->rows != static_cast<int>(L.neuronExpert.size()))
      throw FormatError(file + ": tensor '" + prefix + "pca.neuron_expert' does not give the expert of every row of '" +
                        prefix + "pca.neurons'");
    for (int e : L.neuronExpert)
      if (e < 0 || e >= L.experts)
        throw FormatError(file + ": tensor '" + prefix + "pca.neuron_expert' names expert " + std::to_string(e) +
                          " of " + std::to_string(L.experts));
    a->perLayer[site->layer] = std::move(L);
  }
  for (const auto& [layer, L] : a->perLayer) {
    a->layers.push_back(layer);
    a->sites.push_back(L.site);
  }
  if (core.has("rank_counts")) a->rankCounts = toMatrix(core.tensor("rank_counts"));
  if (core.meta.contains("top1_norm_share") && core.meta["top1_norm_share"].is_number())
    a->top1NormShare = core.meta["top1_norm_share"].get<double>();
  return a;
}

// ---------------------------------------------------------------- Model

ModelSummary ModelSummary::read(const QString& dir) {
  ModelSummary s;
  s.info = describeModelFiles(P(dir));
  return s;
}

// ---------------------------------------------------------------- SharedModel

std::shared_ptr<const LoadedModel> SharedModel::get() const {
  std::lock_guard<std::mutex> lock(mu_);  // one load; other callers wait for it
  if (!model_) model_ = std::make_shared<const LoadedModel>(loadModel(P(dir_)));
  return model_;
}

bool SharedModel::loaded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return model_ != nullptr;
}

std::shared_ptr<const Tokenizer> SharedModel::tokenizer() const {
  const std::shared_ptr<const LoadedModel> m = get();
  if (!m->tokenizer) throw FormatError(dir_.toStdString() + ": has no usable tokenizer (" + m->tokenizerError + ")");
  return std::shared_ptr<const Tokenizer>(m, m->tokenizer.get());  // aliasing: keeps the model alive
}

void SharedModel::checkRecording(const Recording& rec) const {
  const std::shared_ptr<const LoadedModel> m = get();
  if (rec.core()) rec.core()->checkModel(*m->model);
}

std::vector<float> SharedModel::neuronActivations(const Site& site, int neuron, const std::vector<int32_t>& ids,
                                                  int64_t begin, int64_t end, int seqLen, JobContext* job) const {
  const std::shared_ptr<const LoadedModel> m = get();
  return neuronActivationsInWindows(*m->model, site, neuron, ids, begin, end, seqLen, job);
}

// ---------------------------------------------------------------- TextProbe

struct TextProbe::Impl {
  std::shared_ptr<const LoadedModel> loaded;
};

TextProbe::~TextProbe() = default;

std::shared_ptr<TextProbe> TextProbe::open(const QString& modelDir) {
  return open(std::make_shared<const SharedModel>(modelDir));
}

std::shared_ptr<TextProbe> TextProbe::open(const std::shared_ptr<const SharedModel>& model) {
  auto p = std::shared_ptr<TextProbe>(new TextProbe);
  p->impl_ = std::make_unique<Impl>();
  p->impl_->loaded = model->get();
  if (!p->impl_->loaded->tokenizer)
    throw FormatError(model->dir().toStdString() + ": has no usable tokenizer (" + p->impl_->loaded->tokenizerError +
                      ")");
  p->dir = model->dir();
  p->layers = p->impl_->loaded->model->config().nLayer;
  return p;
}

namespace {
// The FFN input and hidden activation of one site, batch row 0.
class SiteCapture : public HookSink {
 public:
  explicit SiteCapture(Site site) : site_(site) {}
  at::Tensor in, act;  // [T, d_model], [T, d_ff]
  bool wants(int layer, HookPoint) const override {
    return site_.stack == SiteStack::Single && site_.expert < 0 && !site_.shared && layer == site_.layer;
  }
  void on(int, HookPoint p, const at::Tensor& x) override { keep(p, x); }
  bool wantsSite(const Site& s, HookPoint p) const override {
    return s == site_ && (p == HookPoint::FfnIn || p == HookPoint::FfnAct);
  }
  void onSite(const Site&, HookPoint p, const at::Tensor& x) override { keep(p, x); }

 private:
  void keep(HookPoint p, const at::Tensor& x) {
    if (p != HookPoint::FfnIn && p != HookPoint::FfnAct) return;
    at::Tensor t = x[0].to(at::kFloat).contiguous().clone();
    (p == HookPoint::FfnIn ? in : act) = t;
  }
  Site site_;
};
}  // namespace

TextActivations TextProbe::run(const QString& text, int layer) const { return run(text, Site::ofLayer(layer)); }

TextActivations TextProbe::run(const QString& text, const Site& site) const {
  const Model& m = *impl_->loaded->model;
  const ModelConfig& c = m.config();
  const Tokenizer& tok = *impl_->loaded->tokenizer;
  if (site.expert >= 0 || site.shared)
    throw ParameterError(dir.toStdString() + ": typed text runs whole-FFN sites; " + site.name() +
                         " is a native expert (it shows the recorded samples)");
  if ((site.stack == SiteStack::Single) == c.encoderDecoder || site.layer < 0 || site.layer >= c.layerCount(site.stack))
    throw ParameterError(dir.toStdString() + ": the model has no FFN site " + site.name());
  const std::string utf8 = text.toStdString();
  if (text.trimmed().isEmpty()) throw ParameterError("type a text to route");
  std::vector<int32_t> ids = tok.encode(utf8, true);
  if (ids.empty()) throw ParameterError("the tokenizer produced no tokens for this text");
  const int maxLen = c.pos == PosKind::Learned && c.maxPos > 0 ? c.maxPos : 4096;
  if (static_cast<int>(ids.size()) > maxLen) ids.resize(maxLen);
  for (int32_t id : ids)
    if (id < 0 || id >= c.vocab)
      throw FormatError(dir.toStdString() + ": the tokenizer produced id " + std::to_string(id) +
                        " outside the model's vocabulary [0, " + std::to_string(c.vocab) + ")");
  SiteCapture cap(site);
  TextActivations out;
  const std::vector<int64_t> ids64(ids.begin(), ids.end());
  if (c.encoderDecoder) {
    // The dense model's translation (the workspace model's FFNs: a MoE export translates with its experts).
    Seq2SeqGenerateOptions go;
    go.maxNewTokens = 128;
    const Seq2SeqGeneration gen = greedyGenerateSeq2Seq(m, {ids64}, go);
    const std::vector<int64_t>& ys = gen.tokens.at(0);
    if (ys.empty()) throw FormatError(dir.toStdString() + ": the model generated no token for this source");
    std::vector<int64_t> decoderIn = {gen.decoderStartId};
    decoderIn.insert(decoderIn.end(), ys.begin(), ys.end() - 1);  // step t reads y_{t-1}, emits y_t
    m.forwardSeq2Seq(makeBatch({ids64}), makeBatch({decoderIn}), &cap);
    out.decoderRows = site.stack == SiteStack::Decoder;
    out.ids = out.decoderRows ? std::vector<int32_t>(ys.begin(), ys.end()) : ids;
    std::vector<int32_t> text32(ys.begin(), ys.end());
    out.translation = tok.decode(text32, true);
  } else {
    m.forwardHidden(makeBatch({ids64}), &cap);
    out.ids = ids;
  }
  if (!cap.in.defined() || !cap.act.defined())
    throw FormatError(dir.toStdString() + ": site " + site.name() + " reported no FFN activations");
  out.dModel = static_cast<int>(cap.in.size(1));
  out.dFF = static_cast<int>(cap.act.size(1));
  out.in = toVector<float>(cap.in, at::kFloat);
  out.act = toVector<float>(cap.act, at::kFloat);
  out.reluLike = plainReluFfn(c.act, c.gated);
  return out;
}

}  // namespace moefy::views
