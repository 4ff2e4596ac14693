#include "analysis/project/artefact.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "analysis/analyze/moe_analysis.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval_results.h"
#include "analysis/eval/front.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/site.h"
#include "analysis/moe/moe_checkpoint.h"
#include "analysis/moe/moe_export.h"
#include "analysis/project/project.h"
#include "analysis/record/recording.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

std::string listText(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

std::string fmtG(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string describeRecording(const fs::path& dir) {
  const Recording r = Recording::open(dir);
  return std::to_string(r.tokens()) + " tokens, layers " + listText(r.layers()) + ", d_ff " + std::to_string(r.dFF()) +
         (r.sampleCount() > 0 ? ", " + std::to_string(r.sampleCount()) + " sampled tokens"
                              : std::string(", no samples"));
}

std::string describePartition(const fs::path& dir) {
  const Partition p = Partition::open(dir);
  return p.method() + ", E=" + std::to_string(p.experts()) + ", seed " +
         std::to_string(p.json().value("seed", static_cast<uint64_t>(0))) + ", layers " + listText(p.layers());
}

std::string describeRouter(const fs::path& dir) {
  const RouterSet r = RouterSet::read(dir);
  int maxE = 0;
  for (int e : r.experts) maxE = std::max(maxE, e);
  return std::string(routerKindName(r.kind)) + " router, E=" + std::to_string(maxE) + ", top-k " + listText(r.topK);
}

std::string describeEvaluation(const fs::path& dir) {
  const EvalResults e = EvalResults::read(dir);
  std::string s = std::to_string(e.resultCount()) + " results over " + std::to_string(e.series.size()) + " router(s)";
  if (e.densePerplexity == e.densePerplexity) s += ", dense perplexity " + fmtG(e.densePerplexity);
  return s;
}

// A front (analysis/eval/front.h): its methods, budgets and the best method
// at each budget, read and validated by readFront.
std::string describeFront(const fs::path& dir) {
  const FrontResult f = readFront(dir);
  std::string methods, budgets;
  for (const auto& m : f.methods) methods += (methods.empty() ? "" : ", ") + m.name;
  for (double b : f.budgets) budgets += (budgets.empty() ? "" : ", ") + fmtG(b);
  std::string s = "front of " + methods + " at FFN FLOP budgets " + budgets + ", E=" + std::to_string(f.experts) +
                  ", dense perplexity " + fmtG(f.densePerplexity);
  for (const auto& b : f.best)
    if (!b.method.empty()) s += "; best at " + fmtG(b.budget) + ": " + b.method + " (" + fmtG(b.perplexity) + ")";
  return s;
}

// A MoE analysis (analysis/analyze/moe_analysis.h): the analysed model, its
// layers, and whether the corpus-based analyses ran, validated by
// readMoeAnalysis (every listed tensor present with its shape).
std::string describeAnalysis(const fs::path& dir) {
  const MoeAnalysis a = readMoeAnalysis(dir);
  const nlohmann::json& m = a.meta;
  const nlohmann::json model = m.contains("model") && m["model"].is_object() ? m["model"] : nlohmann::json::object();
  std::string sites;
  for (const auto& [site, v] : m["sites"].items()) sites += (sites.empty() ? "" : ", ") + site;
  const bool isExport = model.contains("kind") && model["kind"] == "moefied export";
  std::string s =
      std::string("MoE analysis of ") + (isExport ? "the MoE export of " : "") +
      (model.contains("model_type") && model["model_type"].is_string() ? model["model_type"].get<std::string>()
                                                                       : std::string("a MoE model"));
  if (model.contains("experts") && model["experts"].is_number_integer())
    s += ", E=" + std::to_string(model["experts"].get<int64_t>());
  if (model.contains("top_k") && model["top_k"].is_number_integer())
    s += " top-" + std::to_string(model["top_k"].get<int64_t>());
  s += ", sites " + (sites.empty() ? std::string("none") : sites);
  const nlohmann::json corpus = m.value("corpus", nlohmann::json());
  if (corpus.is_object() && corpus.contains("tokens") && corpus["tokens"].is_number_integer())
    s += ", " + std::to_string(corpus["tokens"].get<int64_t>()) + " corpus tokens";
  else
    s += ", weights only";
  if (m.contains("top1_norm_share") && m["top1_norm_share"].is_number())
    s += ", top-1 = largest-norm share " + fmtG(m["top1_norm_share"].get<double>());
  return s;
}

std::string describeExport(const fs::path& dir) {
  const MoeExportInfo m = readMoeExport(dir);
  std::string s = "MoE export, " + m.router + " router, top-k " + listText(m.topK);
  if (m.calibrated) {
    const auto& c = m.block["calibration"];
    s += ", calibrated (" + std::to_string(c.value("steps", 0)) + " steps";
    if (c.contains("lm_loss_before") && c.contains("lm_loss_after") && c["lm_loss_before"].is_number() &&
        c["lm_loss_after"].is_number())
      s += ", LM loss " + fmtG(c["lm_loss_before"].get<double>()) + " -> " + fmtG(c["lm_loss_after"].get<double>());
    s += ")";
  }
  return s;
}

std::string describeWorkspace(const fs::path& dir) {
  const Workspace w = Workspace::load(dir);
  return "workspace '" + w.name + "', model " + w.modelPath;
}

}  // namespace

const std::vector<ArtefactKindInfo>& artefactKinds() {
  static const std::vector<ArtefactKindInfo> kinds = {
      {ArtefactKind::Recording, "recording", "recordings", "manifest.json", "moefy-recording", describeRecording},
      {ArtefactKind::Partition, "partition", "partitions", "partition.json", "moefy-partition", describePartition},
      {ArtefactKind::Router, "router", "routers", "router.json", "moefy-router", describeRouter},
      {ArtefactKind::Evaluation, "evaluation", "evaluations", "eval.json", "moefy-eval", describeEvaluation},
      {ArtefactKind::Front, "front", "fronts", "front.json", "moefy-front", describeFront},
      {ArtefactKind::Analysis, "analysis", "analyses", "analysis.json", "moefy-moe-analysis", describeAnalysis},
      {ArtefactKind::MoeExport, "export", "exports", "config.json", "moefy-moe", describeExport},
      {ArtefactKind::CalibratedExport, "calibrated", "calibrated", "config.json", "moefy-moe", describeExport},
      {ArtefactKind::Workspace, "workspace", "", "workspace.json", "moefy-workspace", describeWorkspace},
  };
  return kinds;
}

const ArtefactKindInfo& artefactKindInfo(ArtefactKind kind) {
  for (const auto& k : artefactKinds())
    if (k.kind == kind) return k;
  throw Error("unknown artefact kind");  // unreachable: every enumerator has a row
}

const ArtefactKindInfo* artefactKindByName(const std::string& name) {
  for (const auto& k : artefactKinds())
    if (name == k.name) return &k;
  return nullptr;
}

std::optional<ArtefactKind> identifyArtefact(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::nullopt;
  for (const auto& k : artefactKinds()) {
    const fs::path f = dir / k.metadataFile;
    if (!fs::is_regular_file(f, ec)) continue;
    if (k.kind == ArtefactKind::MoeExport || k.kind == ArtefactKind::CalibratedExport) {
      // A config.json is an artefact only with a moefication block (a dense
      // model folder is an input, not an artefact).
      try {
        const nlohmann::json j = nlohmann::json::parse(readFile(f));
        if (!j.is_object() || !j.contains("moefication")) continue;
        const bool calibrated = j["moefication"].is_object() && j["moefication"].contains("calibration");
        return calibrated ? ArtefactKind::CalibratedExport : ArtefactKind::MoeExport;
      } catch (const std::exception&) {
        // A malformed config.json next to moe.safetensors is still an export
        // (a broken one: describe() reports why).
        if (fs::exists(dir / "moe.safetensors", ec)) return ArtefactKind::MoeExport;
        continue;
      }
    }
    return k.kind;
  }
  return std::nullopt;
}

MoeExportInfo readMoeExport(const fs::path& dir) {
  const std::string ctx = (dir / "config.json").string();
  if (!fs::is_regular_file(dir / "config.json")) throw IoError(ctx + ": missing (not a model folder)");
  MoeExportInfo m;
  m.block = readMoeficationBlock(dir);
  if (m.block.is_null()) throw FormatError(ctx + ": no 'moefication' block (a dense model, not a MoE export)");
  const auto& b = m.block;
  if (b.value("format", std::string()) != "moefy-moe")
    throw FormatError(ctx + ": moefication.format must be 'moefy-moe'");
  auto list = [&](const char* key) {
    if (!b.contains(key) || !b[key].is_array()) throw FormatError(ctx + ": moefication." + key + " must be a list");
    try {
      return b[key].get<std::vector<int>>();
    } catch (const nlohmann::json::exception&) {
      throw FormatError(ctx + ": moefication." + key + " has entries of the wrong type");
    }
  };
  m.layers = list("layers");
  m.experts = list("experts");
  m.topK = list("top_k");
  if (m.layers.empty()) throw FormatError(ctx + ": moefication.layers is empty");
  if (m.experts.size() != m.layers.size() || m.topK.size() != m.layers.size())
    throw FormatError(ctx + ": moefication lists 'layers', 'experts' and 'top_k' must have the same length");
  for (size_t i = 0; i < m.layers.size(); ++i)
    if (m.experts[i] <= 0 || m.topK[i] < 1 || m.topK[i] > m.experts[i])
      throw FormatError(ctx + ": layer " + std::to_string(m.layers[i]) + " has top_k " + std::to_string(m.topK[i]) +
                        " outside [1, " + std::to_string(m.experts[i]) + "]");
  m.router = b.contains("router") && b["router"].is_string() ? b["router"].get<std::string>() : std::string();
  try {
    routerKindFromName(m.router, ctx + ": moefication.router");
  } catch (const ParameterError& e) {
    throw FormatError(e.what());
  }
  if (!b.contains("checksum") || !b["checksum"].is_string())
    throw FormatError(ctx + ": moefication.checksum is missing");
  if (b["checksum"].get<std::string>() != moeficationChecksum(b))
    throw FormatError(ctx + ": the moefication block was edited (checksum mismatch); re-export the model");
  const std::string wname = b.value("weights", std::string("moe.safetensors"));
  if (wname.find('/') != std::string::npos || wname.find("..") != std::string::npos)
    throw FormatError(ctx + ": moefication.weights must be a plain file name");
  const fs::path wf = dir / wname;
  if (!fs::exists(wf)) throw IoError(wf.string() + ": missing (MoE expert weights)");
  auto st = SafetensorsFile::open(wf);  // header only: the mapping is not read
  auto meta = st->metadata().find("moefication_checksum");
  if (meta == st->metadata().end() || meta->second != b["checksum"].get<std::string>())
    throw FormatError(wf.string() + ": does not belong to this config.json (moefication checksum differs)");
  m.calibrated = b.contains("calibration") && b["calibration"].is_object();
  return m;
}

}  // namespace moefy

namespace moefy {

namespace {

// The metrics entry of site index `layer` in a partition.json: keyed by the
// site's JSON key (siteJsonKey: the bare layer for single-stack sites, the
// site name for enc.blk.L / dec.blk.L / blk.L.exp.E), found through the
// partition's own site list; version 1 files key by the layer. Null if absent.
const nlohmann::json* partitionMetricsEntry(const nlohmann::json& j, int layer) {
  auto m = j.find("metrics");
  if (m == j.end() || !m->is_object()) return nullptr;
  std::vector<std::string> keys;
  try {
    const std::vector<int> layers = j.at("layers").get<std::vector<int>>();
    const std::vector<Site> sites = readSiteList(j, layers, "partition.json");
    for (size_t i = 0; i < layers.size(); ++i)
      if (layers[i] == layer) keys.push_back(siteJsonKey(sites[i]));
  } catch (const std::exception&) {
    // a malformed site list: fall back to the single-stack keys below
  }
  keys.push_back(std::to_string(layer));
  keys.push_back(Site::ofLayer(layer).name());
  for (const std::string& k : keys) {
    auto l = m->find(k);
    if (l != m->end() && l->is_object()) return &*l;
  }
  return nullptr;
}

}  // namespace

double partitionMetric(const nlohmann::json& j, int layer, const std::string& key) {
  const nlohmann::json* l = partitionMetricsEntry(j, layer);
  if (!l) return std::nan("");
  auto v = l->find(key);
  return v != l->end() && v->is_number() ? v->get<double>() : std::nan("");
}

std::vector<double> partitionRecallAtK(const nlohmann::json& j, int layer) {
  std::vector<double> out;
  const nlohmann::json* l = partitionMetricsEntry(j, layer);
  if (!l) return out;
  auto r = l->find("recall_at_k");
  if (r == l->end() || !r->is_array()) return out;
  for (const auto& v : *r)
    if (v.is_number()) out.push_back(v.get<double>());
  return out;
}

}  // namespace moefy
