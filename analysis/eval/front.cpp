#include "analysis/eval/front.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval_data.h"
#include "analysis/eval/eval_run.h"
#include "analysis/eval/sequences.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/links.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/ffn_flops.h"
#include "analysis/moe/layer_budget.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_inputs.h"
#include "analysis/split/split.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string>& frontMethodNames() {
  static const std::vector<std::string> names = {"plain", "per-layer", "shared", "dynamic-k", "bound"};
  return names;
}

void checkFrontOptions(FrontOptions& o) {
  const auto& known = frontMethodNames();
  if (o.methods.empty())
    throw ParameterError("--methods: no method given (plain, per-layer, shared, dynamic-k, bound)");
  std::set<std::string> seen;
  for (const auto& m : o.methods) {
    if (std::find(known.begin(), known.end(), m) == known.end())
      throw ParameterError("--methods: unknown method '" + m + "' (plain, per-layer, shared, dynamic-k, bound)");
    if (!seen.insert(m).second) throw ParameterError("--methods: '" + m + "' given twice");
  }
  if (o.budgets.empty()) throw ParameterError("--budgets: no budget given");
  for (double b : o.budgets)
    if (!(b > 0 && b <= 1) || !std::isfinite(b))
      throw ParameterError("--budgets: " + std::to_string(b) + " is not an FFN FLOP fraction in (0, 1]");
  std::sort(o.budgets.begin(), o.budgets.end());
  for (size_t i = 1; i < o.budgets.size(); ++i)
    if (o.budgets[i] == o.budgets[i - 1])
      throw ParameterError("--budgets: " + std::to_string(o.budgets[i]) + " given twice");
  if (o.experts < 1) throw ParameterError("--experts: must be at least 1");
  if (!(o.tau > 0 && o.tau <= 1)) throw ParameterError("--tau: must be in (0, 1]");
  if (o.allocate != "activity" && o.allocate != "greedy")
    throw ParameterError("--allocate: '" + o.allocate + "' is not activity or greedy");
  if (!o.recording.empty() && o.methods == std::vector<std::string>{"bound"})
    throw ParameterError("--recording: the bound alone uses no recording");
}

// ---- front.json -------------------------------------------------------------

const FrontMethod* FrontResult::method(const std::string& name) const {
  for (const auto& m : methods)
    if (m.name == name) return &m;
  return nullptr;
}

const FrontPoint* FrontResult::pointAt(const FrontMethod& m, double budget) {
  for (const auto& p : m.points)
    if (p.budget == budget) return &p;
  return nullptr;
}

namespace {

json pointJson(const FrontPoint& p) {
  json j = {{"budget", p.budget},         {"ffn_flops_fraction", p.ffnFlopsFraction},
            {"perplexity", p.perplexity}, {"top1_agreement", p.top1Agreement},
            {"fraction", p.fraction},     {"mean_k", p.meanK}};
  if (!p.routerDir.empty()) j["router_dir"] = p.routerDir;
  return j;
}

// "FILE:" + "key" -> "FILE: key"; "FILE: methods[0]" + "name" -> "FILE: methods[0].name".
std::string keyPath(const std::string& where, const std::string& key) {
  return where + (!where.empty() && where.back() == ':' ? " " : ".") + key;
}

const json& member(const json& obj, const std::string& key, const std::string& where) {
  if (!obj.is_object()) throw FormatError(where + ": must be an object");
  auto it = obj.find(key);
  if (it == obj.end()) throw FormatError(keyPath(where, key) + ": missing");
  return *it;
}

std::string textMember(const json& obj, const std::string& key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_string()) throw FormatError(keyPath(where, key) + ": must be a string");
  return v.get<std::string>();
}

double numberIn(const json& obj, const std::string& key, double lo, double hi, const std::string& where) {
  const double v = jsonFinite(member(obj, key, where), keyPath(where, key));
  if (v < lo || v > hi)
    throw FormatError(keyPath(where, key) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  return v;
}

std::vector<double> budgetList(const json& v, const std::string& where) {
  if (!v.is_array()) throw FormatError(where + ": must be a list of numbers");
  std::vector<double> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string w = where + "[" + std::to_string(i) + "]";
    const double b = jsonFinite(v[i], w);
    if (!(b > 0 && b <= 1)) throw FormatError(w + " = " + std::to_string(b) + " is outside (0, 1]");
    if (!out.empty() && b <= out.back()) throw FormatError(w + ": budgets must be ascending and distinct");
    out.push_back(b);
  }
  return out;
}

}  // namespace

FrontResult FrontResult::fromJson(const json& doc, const std::string& file) {
  FrontResult f;
  const std::string where = file + ":";  // keys follow as "FILE: methods[0].name"
  if (!doc.is_object()) throw FormatError(file + ": not a JSON object");
  if (textMember(doc, "format", where) != "moefy-front") throw FormatError(file + ": format is not \"moefy-front\"");
  if (jsonInt(member(doc, "version", where), 1, 1000000, keyPath(where, "version")) != 1)
    throw FormatError(file + ": version " + doc["version"].dump() + " is not supported (1)");
  f.budgets = budgetList(member(doc, "budgets", where), keyPath(where, "budgets"));
  if (f.budgets.empty()) throw FormatError(keyPath(where, "budgets") + ": empty");
  f.experts = jsonInt(member(doc, "experts", where), 1, 1 << 24, keyPath(where, "experts"));
  const json& dense = member(doc, "dense", where);
  f.densePerplexity = numberIn(dense, "perplexity", 1, std::numeric_limits<double>::max(), keyPath(where, "dense"));
  f.denseLoss = numberIn(dense, "loss", 0, std::numeric_limits<double>::max(), keyPath(where, "dense"));
  const json& methods = member(doc, "methods", where);
  if (!methods.is_array() || methods.empty())
    throw FormatError(keyPath(where, "methods") + ": must be a non-empty list");
  const auto& known = frontMethodNames();
  for (size_t i = 0; i < methods.size(); ++i) {
    const std::string w = keyPath(where, "methods[" + std::to_string(i) + "]");
    const json& mj = methods[i];
    FrontMethod m;
    m.name = textMember(mj, "name", w);
    if (std::find(known.begin(), known.end(), m.name) == known.end())
      throw FormatError(w + ".name: unknown method '" + m.name + "'");
    if (f.method(m.name)) throw FormatError(w + ".name: '" + m.name + "' appears twice");
    m.router = textMember(mj, "router", w);
    m.eval = textMember(mj, "eval", w);
    if (mj.contains("partition")) m.partition = textMember(mj, "partition", w);
    if (mj.contains("router_dir")) m.routerDir = textMember(mj, "router_dir", w);
    const json& sweep = member(mj, "sweep", w);
    if (!sweep.is_array()) throw FormatError(w + ".sweep: must be a list of numbers");
    for (size_t s = 0; s < sweep.size(); ++s) {
      const double v = jsonFinite(sweep[s], w + ".sweep[" + std::to_string(s) + "]");
      if (!(v > 0 && v <= 1)) throw FormatError(w + ".sweep[" + std::to_string(s) + "] is outside (0, 1]");
      m.sweep.push_back(v);
    }
    m.unreached = budgetList(member(mj, "unreached", w), w + ".unreached");
    const json& points = member(mj, "points", w);
    if (!points.is_array()) throw FormatError(w + ".points: must be a list");
    for (size_t p = 0; p < points.size(); ++p) {
      const std::string pw = w + ".points[" + std::to_string(p) + "]";
      FrontPoint pt;
      pt.budget = numberIn(points[p], "budget", 0, 1, pw);
      if (std::find(f.budgets.begin(), f.budgets.end(), pt.budget) == f.budgets.end())
        throw FormatError(pw + ".budget: " + std::to_string(pt.budget) + " is not one of the front's budgets");
      if (pointAt(m, pt.budget) || std::find(m.unreached.begin(), m.unreached.end(), pt.budget) != m.unreached.end())
        throw FormatError(pw + ".budget: " + std::to_string(pt.budget) + " appears twice for " + m.name);
      pt.ffnFlopsFraction = numberIn(points[p], "ffn_flops_fraction", 0, 1.5, pw);
      pt.perplexity = numberIn(points[p], "perplexity", 1, std::numeric_limits<double>::max(), pw);
      pt.top1Agreement = numberIn(points[p], "top1_agreement", 0, 1, pw);
      pt.fraction = numberIn(points[p], "fraction", 0, 1, pw);
      pt.meanK = numberIn(points[p], "mean_k", 0, f.experts, pw);
      if (points[p].contains("router_dir")) pt.routerDir = textMember(points[p], "router_dir", pw);
      if (m.name == "per-layer" && pt.routerDir.empty())
        throw FormatError(pw + ".router_dir: missing (a per-layer point names its router)");
      m.points.push_back(pt);
    }
    if (m.points.size() + m.unreached.size() != f.budgets.size())
      throw FormatError(w + ": points and unreached do not cover the budgets once each");
    f.methods.push_back(std::move(m));
  }
  const json& best = member(doc, "best", where);
  if (!best.is_array() || best.size() != f.budgets.size())
    throw FormatError(keyPath(where, "best") + ": must have one entry per budget");
  for (size_t i = 0; i < best.size(); ++i) {
    const std::string w = keyPath(where, "best[" + std::to_string(i) + "]");
    FrontBest b;
    b.budget = numberIn(best[i], "budget", 0, 1, w);
    if (b.budget != f.budgets[i]) throw FormatError(w + ".budget: must be budgets[" + std::to_string(i) + "]");
    const json& mv = member(best[i], "method", w);
    if (!mv.is_null()) {
      if (!mv.is_string()) throw FormatError(w + ".method: must be a method name or null");
      b.method = mv.get<std::string>();
      const FrontMethod* m = f.method(b.method);
      if (!m || b.method == "bound") throw FormatError(w + ".method: '" + b.method + "' is not a method of the front");
      const FrontPoint* p = pointAt(*m, b.budget);
      if (!p) throw FormatError(w + ".method: '" + b.method + "' has no point at this budget");
      b.perplexity = numberIn(best[i], "perplexity", 1, std::numeric_limits<double>::max(), w);
      if (b.perplexity != p->perplexity) throw FormatError(w + ".perplexity: differs from the method's point");
    }
    if (best[i].contains("plain_perplexity") && !best[i]["plain_perplexity"].is_null())
      b.plainPerplexity = numberIn(best[i], "plain_perplexity", 1, std::numeric_limits<double>::max(), w);
    f.best.push_back(b);
  }
  f.document = doc;
  return f;
}

FrontResult readFront(const fs::path& dir) {
  const fs::path file = dir / "front.json";
  return FrontResult::fromJson(readJsonFile(file), file.string());
}

// ---- running it ---------------------------------------------------------------

namespace {

// Predicted FFN FLOP fraction of the MoE of partition `part` with `router`
// and every MoE layer at top-k `k`, as evaluateQuality counts it
// (analysis/moe/ffn_flops.h; layers without experts at their dense cost):
// exact for fixed-k routers (k experts of (d_ff - shared) / E neurons plus the
// shared expert on every token), an upper bound for dynamic-k (its tokens take
// k or fewer experts).
double predictedFlopsFraction(const PartitionData& part, const ModelConfig& cfg, RouterKind router, int k) {
  double flops = 0, dense = 0;
  for (int L = 0; L < cfg.nLayer; ++L) {
    FfnFlopCount c;
    c.dModel = cfg.dModel, c.dFF = cfg.dFF, c.gated = cfg.gated;
    const int i = part.indexOfLayer(L);
    if (i >= 0) {
      const int shared = part.shared.empty() ? 0 : part.shared[i];
      c.method = FfnFlopCount::Method::Moe;
      c.router = router;
      c.experts = part.experts;
      c.neurons = double(shared) + std::min(k, part.experts) * (double(cfg.dFF - shared) / part.experts);
    }
    FfnFlopCount d = c;
    d.method = FfnFlopCount::Method::Dense;
    flops += ffnFlops(c);
    dense += ffnFlops(d);
  }
  return flops / dense;
}

// The largest k in [1, E] whose predicted FLOP fraction is within the budget;
// 0 if even k = 1 is over it.
int kForBudget(const PartitionData& part, const ModelConfig& cfg, RouterKind router, double budget) {
  int best = 0;
  for (int k = 1; k <= part.experts; ++k)
    if (predictedFlopsFraction(part, cfg, router, k) <= budget + 1e-12) best = k;
  return best;
}

struct MethodPlan {
  std::string name, router, partition, routerDir;
  std::map<double, int> kAt;  // budget -> top-k (k/E the sweep fraction)
  // per-layer: budget -> its router folder (relative), in budget order.
  std::map<double, std::string> routerAt;
};

// --recording: the recording must be of `model` and of TRAIN_CORPUS (its
// content fingerprint when both are known, else its path), so that front.json
// says truthfully what the routers were trained on. Returns the recording's
// token and sample counts, which front.json records.
std::pair<int64_t, int64_t> checkReusedRecording(const fs::path& recDir, const Model& model,
                                                 const fs::path& trainCorpus) {
  const Recording rec = Recording::open(recDir);
  rec.checkModel(model);
  const DataSelection data = recordingDataSelection(rec.manifest());
  const fs::path train = fs::absolute(trainCorpus).lexically_normal();
  const bool same = !data.fingerprint.empty() && fs::exists(train) ? data.fingerprint == contentFingerprint(train)
                                                                   : data.corpus == train;
  if (!same)
    throw ParameterError("--recording " + recDir.string() + ": it recorded " + data.corpus.string() +
                         ", not TRAIN_CORPUS " + train.string());
  return {rec.tokens(), rec.sampleCount()};
}

double meanOfNumbers(const json& v) {
  double s = 0;
  int n = 0;
  if (v.is_array())
    for (const auto& x : v)
      if (x.is_number()) s += x.get<double>(), ++n;
  return n ? s / n : 0.0;
}

std::string relPath(const fs::path& p, const fs::path& dir) { return p.lexically_relative(dir).generic_string(); }

}  // namespace

FrontResult runFront(const fs::path& modelDir, const fs::path& trainCorpus, const fs::path& heldoutCorpus,
                     FrontOptions o, const fs::path& dir, JobContext& job) {
  checkFrontOptions(o);
  auto wants = [&](const std::string& m) {
    return std::find(o.methods.begin(), o.methods.end(), m) != o.methods.end();
  };
  const bool needPlain = wants("plain") || wants("per-layer"), needShared = wants("shared") || wants("dynamic-k");
  const bool needRecording = needPlain || needShared;

  job.setStage("front: load model");
  LoadedModel loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is a MoE export; run the front on the dense model");
  Model& model = *loaded.model;
  const ModelConfig& cfg = model.config();
  if (cfg.encoderDecoder)
    throw ParameterError(modelDir.string() + ": " + cfg.modelType +
                         " is an encoder-decoder model; the front covers single-stack models so far");
  if (cfg.expertCount > 0)
    throw ParameterError(modelDir.string() + ": " + cfg.modelType +
                         " is a native MoE model; the front covers dense single-stack models so far (MoEfy its "
                         "experts with split --sites blk.L.exp.E, route and eval)");
  if (!loaded.tokenizer)
    throw FormatError(modelDir.string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                      "); the front reads text corpora");

  // 1. Record the training corpus (the routers' samples, the split's
  // statistics), or reuse the given recording of it.
  fs::path recDir = dir / "recording";
  // What front.json records: the options, or a reused recording's own counts.
  int64_t recordTokens = o.recordTokens, samples = o.samples;
  if (needRecording && !o.recording.empty()) {
    recDir = fs::absolute(o.recording).lexically_normal();
    job.setStage("front: check the recording");
    std::tie(recordTokens, samples) = checkReusedRecording(recDir, model, trainCorpus);
  } else if (needRecording) {
    RecordOptions ro;
    ro.seqLen = o.seqLen;
    ro.maxTokens = o.recordTokens;
    ro.samples = o.samples;
    ro.seed = o.seed;
    ro.shuffle = true;
    requireRecordable(cfg, modelDir.string());
    const fs::path absCorpus = fs::absolute(trainCorpus).lexically_normal();
    std::unique_ptr<Corpus> corpus = Corpus::open(absCorpus);
    SourceInfo info;
    SequenceSource source = textCorpusSource(*corpus, *loaded.tokenizer, absCorpus, ro, &job, &info);
    recordActivations(model, source, info, ro, recDir, job);
    job.checkCancel();
  }

  // 2. Splits and routers.
  std::vector<MethodPlan> plans;
  auto splitInto = [&](const fs::path& out, bool shared) {
    const Recording rec = Recording::open(recDir);
    SplitOptions so;
    so.method = o.splitMethod;
    so.experts = o.experts;
    so.seed = o.seed;
    if (shared) so.shared = parseShared("auto");  // the documented rule of split --shared auto
    fs::create_directories(out.parent_path());
    runSplit(rec, &model, so, out, job);
    job.checkCancel();
  };
  auto routeInto = [&](const fs::path& partDir, const fs::path& out, RouterKind kind, int topK) {
    const PartitionData part = PartitionData::read(partDir);
    part.checkModel(model);
    const SampleData samples = SampleData::read(recDir, part.sites, cfg);
    RouteOptions ro;
    ro.kind = kind;
    ro.epochs = o.epochs;
    ro.seed = o.seed;
    ro.tau = o.tau;
    if (topK > 0) ro.topK = topK;
    const RouterSet rs = buildRouters(model, part, samples, ro, job);
    fs::create_directories(out.parent_path());
    writeFolderAtomic(out, false, [&](const fs::path& tmp) { rs.writeInto(tmp); });
    job.checkCancel();
  };
  // The MoE as `moefy eval` builds it: partition and router read back from their folders.
  auto moeOf = [&](const fs::path& partDir, const fs::path& routerDir) {
    const PartitionData part = PartitionData::read(partDir);
    const RouterSet rs = RouterSet::read(routerDir);
    return std::shared_ptr<const MoeFfn>(buildMoeFfn(model, part, rs, 0));
  };
  const fs::path plainPart = dir / "partitions" / "plain", sharedPart = dir / "partitions" / "shared";
  if (needPlain) splitInto(plainPart, false);
  if (wants("plain")) {
    routeInto(plainPart, dir / "routers" / "plain-mlp", RouterKind::Mlp, 0);
    plans.push_back({"plain", "mlp", relPath(plainPart, dir), "routers/plain-mlp", {}, {}});
  }
  if (wants("per-layer")) {
    // One router folder per budget: `moefy route --budget B --allocate A`.
    // A budget below one expert in every layer has no allocation (unreached).
    const PartitionData part = PartitionData::read(plainPart);
    const std::vector<LayerFlopTable> tables = layerFlopTables(model, part, RouterKind::Mlp);
    const double floor = allocationFlopsFraction(std::vector<int>(tables.size(), 1), tables);
    const SampleData samples = SampleData::read(recDir, part.sites, cfg);
    MethodPlan plan{"per-layer", "mlp", relPath(plainPart, dir), "routers/per-layer", {}, {}};
    for (double b : o.budgets) {
      if (floor > b * (1 + 1e-12)) continue;
      RouteOptions ro;
      ro.kind = RouterKind::Mlp;
      ro.epochs = o.epochs;
      ro.seed = o.seed;
      ro.tau = o.tau;  // unused by mlp routers; recorded in router.json as the front ran
      ro.budget = b;
      ro.allocate = o.allocate;
      job.setStage("front: per-layer routers at " + formatReal(b));
      const RouterSet rs = buildRoutersWithBudget(model, part, samples, recDir.string(), ro, job);
      const std::string rel = plan.routerDir + "/" + formatReal(b);
      fs::create_directories((dir / rel).parent_path());
      writeFolderAtomic(dir / rel, false, [&](const fs::path& tmp) { rs.writeInto(tmp); });
      plan.routerAt[b] = rel;
      job.checkCancel();
    }
    plans.push_back(plan);
  }
  if (needShared) {
    splitInto(sharedPart, true);
    if (wants("shared")) {
      routeInto(sharedPart, dir / "routers" / "shared-mlp", RouterKind::Mlp, 0);
      plans.push_back({"shared", "mlp", relPath(sharedPart, dir), "routers/shared-mlp", {}, {}});
    }
    if (wants("dynamic-k")) {
      // The router's top-k is the most experts a token may take: the cap of
      // the largest budget (with the dynamic-k router's own cost).
      const PartitionData part = PartitionData::read(sharedPart);
      int maxK = 1;
      for (double b : o.budgets) maxK = std::max(maxK, kForBudget(part, cfg, RouterKind::DynamicK, b));
      routeInto(sharedPart, dir / "routers" / "shared-dynamic-k", RouterKind::DynamicK, maxK);
      plans.push_back({"dynamic-k", "dynamic-k", relPath(sharedPart, dir), "routers/shared-dynamic-k", {}, {}});
    }
  }

  // 3. Evaluations on the held-out corpus, one folder per method.
  job.setStage("front: read held-out corpus");
  const std::vector<std::vector<int64_t>> seqs =
      readSequences(heldoutCorpus, loaded, o.seqLen, o.evalTokens, o.evalSplit, &job);
  auto baseSpec = [&]() {
    EvalRunSpec spec;
    spec.options.batch = o.batch;
    spec.options.seed = o.seed;
    spec.options.maskTokenId = maskTokenIdOf(loaded);
    spec.modelPath = modelDir.string();
    spec.corpusPath = heldoutCorpus.string();
    spec.seqLen = o.seqLen;
    spec.split = o.evalSplit;
    return spec;
  };
  FrontResult front;
  front.budgets = o.budgets;
  front.experts = o.experts;
  bool haveDense = false;
  auto takeDense = [&](const json& doc) {
    if (haveDense) return;
    front.densePerplexity = doc["reference"]["perplexity"].get<double>();
    front.denseLoss = doc["reference"]["loss"].get<double>();
    haveDense = true;
  };
  fs::create_directories(dir / "eval");
  for (MethodPlan& plan : plans) {
    job.checkCancel();
    const fs::path partDir = dir / plan.partition, routerDir = dir / plan.routerDir;
    FrontMethod m;
    m.name = plan.name;
    m.router = plan.router;
    m.partition = plan.partition;
    m.routerDir = plan.routerDir;
    m.eval = "eval/" + plan.name;
    if (plan.name == "per-layer") {
      // Each budget's router at its own per-layer k (no sweep), one result
      // per router, named by its budget.
      EvalRunSpec spec = baseSpec();
      json routers = json::array();
      for (double b : o.budgets) {
        auto it = plan.routerAt.find(b);
        if (it == plan.routerAt.end()) {
          m.unreached.push_back(b);
          continue;
        }
        spec.bases.emplace_back("mlp@" + formatReal(b), moeOf(partDir, dir / it->second));
        routers.push_back((dir / it->second).string());
      }
      if (spec.bases.empty()) {
        m.eval.clear();
      } else {
        spec.source = {{"partition", partDir.string()}, {"routers", routers}};
        job.setStage("front: eval " + plan.name);
        const json doc = runEvaluation(model, spec, seqs, job);
        writeEvalFolder(dir / m.eval, false, doc);
        takeDense(doc);
        const int E = PartitionData::read(partDir).experts;
        for (const auto& [b, rel] : plan.routerAt) {
          for (const auto& r : doc["results"]) {
            if (r["router"].get<std::string>() != "mlp@" + formatReal(b)) continue;
            FrontPoint p;
            p.budget = b;
            p.ffnFlopsFraction = r["ffn_flops_fraction"].get<double>();
            p.perplexity = r["perplexity"].get<double>();
            p.top1Agreement = r["top1_agreement"].get<double>();
            p.fraction = r["fraction"].get<double>();  // the mean k/E over the layers
            p.meanK = p.fraction * E;
            p.routerDir = rel;
            m.points.push_back(p);
          }
        }
      }
      front.methods.push_back(std::move(m));
      continue;
    }
    std::shared_ptr<const MoeFfn> moe = moeOf(partDir, routerDir);
    const PartitionData part = PartitionData::read(partDir);
    const RouterKind kind = routerKindFromName(plan.router, plan.routerDir);
    const int E = part.experts;
    std::set<int> ks;
    for (double b : o.budgets) {
      const int k = kForBudget(part, cfg, kind, b);
      if (k == 0) {
        m.unreached.push_back(b);
        continue;
      }
      plan.kAt[b] = k;
      ks.insert(k);
    }
    for (int k : ks) m.sweep.push_back(double(k) / E);
    if (m.sweep.empty()) m.eval.clear();  // no budget reached: nothing to evaluate
    if (!m.sweep.empty()) {
      EvalRunSpec spec = baseSpec();
      spec.bases.emplace_back(plan.router, moe);
      spec.sweep = m.sweep;
      spec.source = {{"partition", partDir.string()}, {"routers", json::array({routerDir.string()})}};
      job.setStage("front: eval " + plan.name);
      const json doc = runEvaluation(model, spec, seqs, job);
      writeEvalFolder(dir / m.eval, false, doc);
      takeDense(doc);
      for (double b : o.budgets) {
        auto it = plan.kAt.find(b);
        if (it == plan.kAt.end()) continue;
        const double f = double(it->second) / E;
        for (const auto& r : doc["results"]) {
          if (r["fraction"].get<double>() != f) continue;
          FrontPoint p;
          p.budget = b;
          p.ffnFlopsFraction = r["ffn_flops_fraction"].get<double>();
          p.perplexity = r["perplexity"].get<double>();
          p.top1Agreement = r["top1_agreement"].get<double>();
          p.fraction = f;
          p.meanK = r.contains("mean_k") ? meanOfNumbers(r["mean_k"]) : double(it->second);
          m.points.push_back(p);
          break;
        }
      }
    }
    front.methods.push_back(std::move(m));
  }
  if (wants("bound")) {
    // The bound at each budget's neuron share of every FFN layer (eval --bound
    // topk-act --sweep BUDGETS without a router).
    EvalRunSpec spec = baseSpec();
    spec.activationBound = true;
    spec.sweep = o.budgets;
    job.setStage("front: eval bound");
    const json doc = runEvaluation(model, spec, seqs, job);
    FrontMethod m;
    m.name = "bound";
    m.router = "topk-act";
    m.eval = "eval/bound";
    m.sweep = o.budgets;
    writeEvalFolder(dir / m.eval, false, doc);
    takeDense(doc);
    for (const auto& r : doc["results"]) {
      FrontPoint p;
      p.budget = r["fraction"].get<double>();
      p.ffnFlopsFraction = r["ffn_flops_fraction"].get<double>();
      p.perplexity = r["perplexity"].get<double>();
      p.top1Agreement = r["top1_agreement"].get<double>();
      p.fraction = p.budget;
      p.meanK = 0;
      m.points.push_back(p);
    }
    front.methods.push_back(std::move(m));
  }
  if (!haveDense) throw ParameterError("front: no method was evaluated");

  // 4. The best method per budget (the bound is a reference, not a method).
  const FrontMethod* plain = front.method("plain");
  for (double b : front.budgets) {
    FrontBest best;
    best.budget = b;
    for (const auto& m : front.methods) {
      if (m.name == "bound") continue;
      const FrontPoint* p = FrontResult::pointAt(m, b);
      if (p && (best.method.empty() || p->perplexity < best.perplexity))
        best.method = m.name, best.perplexity = p->perplexity;
    }
    if (plain)
      if (const FrontPoint* p = FrontResult::pointAt(*plain, b)) best.plainPerplexity = p->perplexity;
    front.best.push_back(best);
  }

  // 5. front.json and the figures.
  json doc;
  doc["format"] = "moefy-front";
  doc["version"] = 1;
  doc["tool_version"] = MOEFY_VERSION;
  doc["model"] = {{"path", fs::absolute(modelDir).lexically_normal().string()}, {"fingerprint", model.fingerprint()}};
  doc["train_corpus"] = fs::absolute(trainCorpus).lexically_normal().string();
  // The recording the splits and routers came from: relative when the front
  // made it (the folder is renamed into place), absolute when reused.
  if (needRecording) doc["recording"] = o.recording.empty() ? std::string("recording") : recDir.string();
  doc["heldout_corpus"] = fs::absolute(heldoutCorpus).lexically_normal().string();
  doc["budgets"] = front.budgets;
  doc["experts"] = front.experts;
  doc["options"] = {{"split_method", o.splitMethod},
                    {"record_tokens", recordTokens},
                    {"samples", samples},
                    {"eval_tokens", o.evalTokens},
                    {"seq_len", o.seqLen},
                    {"split", splitName(o.evalSplit)},
                    {"epochs", o.epochs},
                    {"tau", o.tau},
                    {"allocate", o.allocate},
                    {"batch", o.batch},
                    {"seed", o.seed}};
  doc["dense"] = {{"perplexity", front.densePerplexity}, {"loss", front.denseLoss}};
  json methods = json::array();
  for (const auto& m : front.methods) {
    json mj = {
        {"name", m.name}, {"router", m.router}, {"eval", m.eval}, {"sweep", m.sweep}, {"unreached", m.unreached}};
    if (!m.partition.empty()) mj["partition"] = m.partition;
    if (!m.routerDir.empty()) mj["router_dir"] = m.routerDir;
    json pts = json::array();
    for (const auto& p : m.points) pts.push_back(pointJson(p));
    mj["points"] = pts;
    methods.push_back(mj);
  }
  doc["methods"] = methods;
  json best = json::array();
  for (const auto& b : front.best)
    best.push_back({{"budget", b.budget},
                    {"method", b.method.empty() ? json(nullptr) : json(b.method)},
                    {"perplexity", b.method.empty() ? json(nullptr) : json(b.perplexity)},
                    {"plain_perplexity", b.plainPerplexity > 0 ? json(b.plainPerplexity) : json(nullptr)}});
  doc["best"] = best;
  // Round trip through the validating reader before anything is written: a
  // front the reader would refuse is never produced.
  front = FrontResult::fromJson(doc, (dir / "front.json").string());
  const std::vector<report::Chart> charts = frontCharts(front);
  report::writeSvg(charts[0], dir / "front_perplexity.svg");
  report::writePng(charts[0], dir / "front_perplexity.png");
  report::writeSvg(charts[1], dir / "front_top1.svg");
  report::writePng(charts[1], dir / "front_top1.png");
  writeFileAtomic(dir / "front.json", doc.dump(2) + "\n");
  return front;
}

FrontResult writeFrontFolder(const fs::path& modelDir, const fs::path& trainCorpus, const fs::path& heldoutCorpus,
                             const FrontOptions& options, const fs::path& out, bool force, JobContext& job) {
  FrontOptions o = options;
  checkFrontOptions(o);  // before any output is touched
  checkOutput(out, force, "front", {modelDir, trainCorpus, heldoutCorpus});
  FrontResult front;
  writeFolderAtomic(out, force,
                    [&](const fs::path& tmp) { front = runFront(modelDir, trainCorpus, heldoutCorpus, o, tmp, job); },
                    {modelDir, trainCorpus, heldoutCorpus});
  return front;
}

// ---- figures and table ----------------------------------------------------------

std::vector<report::Chart> frontCharts(const FrontResult& front) {
  report::Chart ppl, top1;
  ppl.title = "Held-out perplexity against FFN FLOPs";
  top1.title = "Top-1 agreement with dense against FFN FLOPs";
  // Short axis and legend texts: the legend sits beside the plot and a long
  // entry squeezes the plot area (the caption and the table say the rest).
  ppl.xLabel = top1.xLabel = "FFN FLOPs / dense (router, shared incl.)";
  ppl.yLabel = "perplexity (log)";
  // Log scale: at small budgets a method can be 10x dense and would flatten the rest.
  ppl.logY = true;
  ppl.width = top1.width = 560;
  top1.yLabel = "top-1 agreement with dense";
  top1.yMax = 1;
  double xMin = 1, xMax = 0;
  for (const auto& m : front.methods) {
    if (m.points.empty()) continue;
    const bool bound = m.name == "bound";
    report::Series sp{bound ? "top-k act. bound" : m.name, {}, {}};
    report::Series st = sp;
    for (const auto& p : m.points) {
      // The bound sits at its neuron budget: it computes the dense hidden
      // besides, so at its own FLOP fraction it would be off the method axis.
      const double x = bound ? p.fraction : p.ffnFlopsFraction;
      sp.x.push_back(x), sp.y.push_back(p.perplexity);
      st.x.push_back(x), st.y.push_back(p.top1Agreement);
      xMin = std::min(xMin, x), xMax = std::max(xMax, x);
    }
    ppl.series.push_back(sp);
    top1.series.push_back(st);
  }
  if (xMax < xMin) xMin = 0, xMax = 1;
  ppl.series.push_back({"dense", {xMin, xMax}, {front.densePerplexity, front.densePerplexity}});
  top1.series.push_back({"dense", {xMin, xMax}, {1.0, 1.0}});
  return {ppl, top1};
}

std::string frontTable(const FrontResult& front) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "dense perplexity %.3f\n", front.densePerplexity);
  os << line;
  os << "method      budget   FLOPs    k/E      mean k   perplexity  top-1\n";
  for (const auto& m : front.methods) {
    for (double b : front.budgets) {
      if (const FrontPoint* p = FrontResult::pointAt(m, b))
        std::snprintf(line, sizeof line, "%-11s %6.4f  %6.4f  %6.4f  %7.3f  %10.3f  %6.4f\n", m.name.c_str(), b,
                      p->ffnFlopsFraction, p->fraction, p->meanK, p->perplexity, p->top1Agreement);
      else
        std::snprintf(line, sizeof line, "%-11s %6.4f  (no operating point within the budget)\n", m.name.c_str(), b);
      os << line;
    }
  }
  for (const auto& b : front.best) {
    if (b.method.empty()) {
      std::snprintf(line, sizeof line, "best at %.4f: none reaches the budget\n", b.budget);
    } else if (b.plainPerplexity > 0) {
      std::snprintf(line, sizeof line, "best at %.4f: %s, perplexity %.3f (plain %.3f, %+.1f %%)\n", b.budget,
                    b.method.c_str(), b.perplexity, b.plainPerplexity, (b.perplexity / b.plainPerplexity - 1) * 100);
    } else {
      std::snprintf(line, sizeof line, "best at %.4f: %s, perplexity %.3f\n", b.budget, b.method.c_str(), b.perplexity);
    }
    os << line;
  }
  return os.str();
}

}  // namespace moefy
