// moefy route / eval / export / calibrate: routers, MoE evaluation, MoE
// checkpoints (issue 5). See docs/moe.md.
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "analysis/calibrate/calibrate.h"
#include "analysis/calibrate/calibrate_options.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/distributed.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_options.h"
#include "analysis/eval/eval_run.h"
#include "analysis/eval/sequences.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/site.h"
#include "analysis/moe/layer_budget.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/moe/moe_options.h"
#include "analysis/project/data_overlap.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_options.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

// ---- route -------------------------------------------------------------------

int runRoute(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), recDir = a.pos(1, "REC_DIR"), partDir = a.pos(2, "PART_DIR");
  const std::string out = a.text("out");
  const RouteOptions o = routeOptionsFrom(a);
  checkOutput(out, a.flag("force"), "router", {modelDir, recDir, partDir});
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is a MoE export; route the dense source model");
  const Model& m = *loaded.model;
  PartitionData part = PartitionData::read(partDir);
  part.checkModel(m);
  warnLinkProblems("route", ArtefactKind::Recording, recDir);
  warnLinkProblems("route", ArtefactKind::Partition, partDir);
  SampleData samples = SampleData::read(recDir, part.sites, m.config());
  // With --budget, the per-layer top-k of the allocation (analysis/moe/layer_budget.h).
  RouterSet rs = buildRoutersWithBudget(m, part, samples, recDir.string(), o, *job);
  writeFolderAtomic(out, a.flag("force"), [&](const fs::path& tmp) { rs.writeInto(tmp); }, {modelDir, recDir, partDir});
  nlohmann::json j;
  j["out"] = out;
  j["kind"] = routerKindName(rs.kind);
  j["layers"] = rs.layers;
  {
    std::vector<Site> sites;
    for (size_t i = 0; i < rs.layers.size(); ++i) sites.push_back(rs.siteAt(i));
    j["sites"] = siteNames(sites);
  }
  j["top_k"] = rs.topK;
  j["experts"] = rs.experts;
  j["metrics"] = rs.metrics;
  if (o.kind == RouterKind::Mlp || o.kind == RouterKind::Sigmoid || o.kind == RouterKind::DynamicK)
    j["training"] = rs.training;
  if (!rs.allocation.is_null()) j["allocation"] = rs.allocation;
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "router " << routerKindName(rs.kind) << " -> " << out << "\n"
            << "layer  experts  top-k  mass_recall  overlap\n";
  for (size_t i = 0; i < rs.layers.size(); ++i) {
    // Keyed by the bare layer number for single-stack sites, by site name otherwise (siteJsonKey).
    const Site site = rs.siteAt(i);
    const auto& mm = rs.metrics.at(siteJsonKey(site));
    const bool plain = site.stack == SiteStack::Single && site.expert < 0 && !site.shared;
    std::cout << std::setw(5) << (plain ? std::to_string(rs.layers[i]) : site.name()) << std::setw(9) << rs.experts[i]
              << std::setw(7) << rs.topK[i] << std::setw(13) << std::fixed << std::setprecision(4)
              << mm["mass_recall"].get<double>() << std::setw(9) << mm["overlap"].get<double>();
    if (mm.contains("mean_k")) std::cout << "  mean k " << mm["mean_k"].get<double>();  // dynamic-k
    if (!rs.allocation.is_null())
      std::cout << "  FLOPs " << std::setprecision(1) << rs.allocation["layer_flops_fraction"][i].get<double>() * 100
                << " % of dense, " << rs.allocation["flops_share"][i].get<double>() * 100 << " % of the spent";
    std::cout << "\n";
  }
  if (!rs.allocation.is_null())
    std::cout << "budget " << std::setprecision(4) << o.budget << " (" << o.allocate << "): FFN FLOPs "
              << rs.allocation["flops_fraction"].get<double>() << " of dense, router included\n";
  return 0;
}

// ---- eval --------------------------------------------------------------------

// The greedy translations of `eval --generate` (eval.json's generation
// blocks): BLEU, chrF, the share decoded as the dense model does, and the
// study's table of decoding time and BLEU per source-length bucket.
void printGeneration(const nlohmann::json& j, int maxNew, int batch) {
  std::vector<std::pair<std::string, const nlohmann::json*>> rows = {{"reference", &j["reference"]}};
  for (const auto& r : j["results"])
    rows.emplace_back(r["router"].get<std::string>() + "/" + r.value("site_group", std::string()) + " " +
                          std::to_string(r["fraction"].get<double>()).substr(0, 5),
                      &r);
  std::cout << "\ngreedy translation: at most " << maxNew << " new tokens, " << batch
            << " sentences per batch; BLEU and chrF against the targets (sacreBLEU defaults)\n"
            << std::left << std::setw(22) << "model" << std::right << std::setw(8) << "BLEU" << std::setw(8) << "chrF"
            << std::setw(10) << "same" << std::setw(11) << "ms/sent" << std::setw(9) << "speedup" << std::setw(11)
            << "truncated"
            << "\n";
  for (const auto& [name, r] : rows) {
    const nlohmann::json& g = (*r)["generation"];
    std::cout << std::left << std::setw(22) << name << std::right << std::fixed << std::setprecision(2) << std::setw(8)
              << g["bleu"].get<double>() << std::setw(8) << g["chrf"].get<double>() << std::setprecision(3)
              << std::setw(10) << g["identical_to_reference"].get<double>() << std::setprecision(2) << std::setw(11)
              << 1000 * g["seconds_per_sentence"].get<double>() << std::setw(9)
              << (g.contains("speedup") ? g["speedup"].get<double>() : NAN) << std::setw(11)
              << g["truncated"].get<int64_t>() << "\n";
  }
  std::cout << "by source length (tokens): ms per sentence (BLEU)\n" << std::left << std::setw(22) << "model";
  for (const auto& b : j["reference"]["generation"]["buckets"])
    std::cout << std::right << std::setw(20)
              << (std::to_string(b["min_source_tokens"].get<int64_t>()) + "-" +
                  std::to_string(b["max_source_tokens"].get<int64_t>()) +
                  " (n=" + std::to_string(b["sentences"].get<int64_t>()) + ")");
  std::cout << "\n";
  for (const auto& [name, r] : rows) {
    std::cout << std::left << std::setw(22) << name;
    for (const auto& b : (*r)["generation"]["buckets"]) {
      std::ostringstream cell;
      cell << std::fixed << std::setprecision(2) << 1000 * b["seconds_per_sentence"].get<double>() << " ("
           << b["bleu"].get<double>() << ")";
      std::cout << std::right << std::setw(20) << cell.str();
    }
    std::cout << "\n";
  }
}

int runEval(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), corpus = a.pos(1, "CORPUS");
  if (a.has("moe") && (a.has("partition") || a.has("router")))
    throw ParameterError("give --moe MOE_DIR or --partition/--router, not both");
  if (a.has("partition") != a.has("router")) throw ParameterError("--partition and --router go together");
  // Every option is checked before the model is loaded.
  const int topK = a.int32("top-k");
  EvalRunSpec spec;
  const EvalCorpusOptions corpusOptions = applyEvalOptions(a, spec);
  std::vector<fs::path> evalInputs = {modelDir, corpus};
  // The --target file of a parallel corpus is an input too: --out must never replace it.
  for (const char* key : {"partition", "moe", "target"})
    if (a.has(key)) evalInputs.emplace_back(a.text(key));
  for (const auto& r : a.all("router")) evalInputs.emplace_back(r);
  if (a.has("out")) checkOutput(a.text("out"), a.flag("force"), "evaluation", evalInputs);
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir, spec.device);
  Model& m = *loaded.model;
  requireEvaluable(m.config(), modelDir.string(), spec);
  if (loaded.isMoe() && !spec.device.is_cpu())
    throw ParameterError("--device " + spec.device.str() + ": " + modelDir.string() +
                         " is a MoE export; give its dense source model as MODEL_DIR and the export as --moe");
  if (spec.generate > 0 && corpusOptions.targetFile.empty()) {
    // Translations are scored against the targets: a single-text corpus has none.
    const std::string ext = corpus.extension().string();
    if (ext != ".tsv" && ext != ".jsonl" && ext != ".ndjson")
      throw ParameterError("--generate: " + corpus.string() +
                           " is a single-text corpus; translations are scored against the targets of a parallel "
                           "corpus (.tsv, .jsonl, or a source file with --target FILE)");
  }

  // The reference and the MoE bases (one per router).
  auto& bases = spec.bases;
  if (a.has("partition")) {
    if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": --partition/--router need the dense source model");
    PartitionData part = PartitionData::read(a.text("partition"));
    warnLinkProblems("eval", ArtefactKind::Partition, a.text("partition"));
    for (const auto& rdir : a.all("router")) {
      RouterSet rs = RouterSet::read(rdir);
      warnLinkProblems("eval", ArtefactKind::Router, rdir);
      bases.emplace_back(routerKindName(rs.kind), buildMoeFfn(m, part, rs, topK));
    }
    spec.source = {{"partition", a.text("partition")}, {"routers", a.all("router")}};
  } else if (a.has("moe")) {
    if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": --moe needs the dense source model as MODEL_DIR");
    auto moeLoaded = loadModel(a.text("moe"), spec.device);  // its experts on the model's device
    if (!moeLoaded.isMoe()) throw ParameterError(a.text("moe") + ": not a MoE export (no moefication block)");
    warnLinkProblems("eval", ArtefactKind::MoeExport, a.text("moe"));
    std::string src = moeLoaded.moefication["source_model"].value("fingerprint", "");
    if (src != m.fingerprint())
      throw ParameterError(a.text("moe") + ": MoE was exported from model " + src + ", not from " + modelDir.string() +
                           " (fingerprint " + m.fingerprint() + ")");
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(moeLoaded.model->ffnOverride());
    auto base = topK ? moe->withTopK(std::vector<int>(moe->layers().size(), topK)) : std::make_shared<MoeFfn>(*moe);
    bases.emplace_back(moeLoaded.moefication.value("router", "moe"), base);
    spec.source = {{"moe", a.text("moe")}};
  } else if (loaded.isMoe()) {
    warnLinkProblems("eval", ArtefactKind::MoeExport, modelDir);
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(m.ffnOverride());
    spec.reference = moe->withFraction(1.0);  // all experts: the dense FFN up to summation order
    auto base = topK ? moe->withTopK(std::vector<int>(moe->layers().size(), topK)) : std::make_shared<MoeFfn>(*moe);
    bases.emplace_back(loaded.moefication.value("router", "moe"), base);
    spec.source = {{"moe", modelDir.string()}, {"reference", "all experts"}};
  } else if (!spec.activationBound) {
    throw ParameterError(
        "give --moe MOE_DIR or --partition PART_DIR --router ROUTER_DIR (or a MoE export as MODEL_DIR)");
  } else if (spec.sweep.empty()) {
    throw ParameterError("--bound without a router needs the budgets: give --sweep F,F,..");
  }
  if (topK)
    for (const auto& [name, b] : bases)
      for (const auto& l : b->layers())
        if (l.weights && topK > l.weights->layout.experts)
          throw ParameterError("--top-k " + std::to_string(topK) + " outside [1, " +
                               std::to_string(l.weights->layout.experts) + "]");
  m.setFfnOverride(nullptr);

  spec.modelPath = modelDir.string();
  spec.corpusPath = corpus.string();
  nlohmann::json j;
  if (m.config().encoderDecoder) {
    // Teacher-forced target perplexity and top-1 agreement per site group (enc, dec, both).
    auto pairs =
        readSeq2SeqPairs(corpus, corpusOptions.targetFile, corpusOptions.sourceField, corpusOptions.targetField, loaded,
                         corpusOptions.seqLen, corpusOptions.tokens, corpusOptions.split, job.get());
    j = runSeq2SeqEvaluation(m, spec, pairs, *job, loaded.tokenizer.get());
  } else {
    if (!corpusOptions.targetFile.empty())
      throw ParameterError("--target: a parallel corpus feeds encoder-decoder models; " + modelDir.string() +
                           " has a single stack");
    auto seqs =
        readSequences(corpus, loaded, corpusOptions.seqLen, corpusOptions.tokens, corpusOptions.split, job.get());
    spec.options.maskTokenId = maskTokenIdOf(loaded);
    j = runEvaluation(m, spec, seqs, *job);
  }
  // Under mpirun every rank holds the same figures; rank 0 writes and prints.
  if (dist::rank() != 0) return 0;
  // A router trained on the documents it is evaluated on flatters itself:
  // say so (also with --quiet, like the link warnings).
  for (const RecordingOverlap& o : evaluationOverlaps(j, fs::current_path()))
    if (!o.message.empty()) std::cerr << "moefy eval: warning: " << o.message << "\n";
  const nlohmann::json& results = j["results"];
  const bool speed = spec.speed;
  if (a.has("out")) {
    writeEvalFolder(a.text("out"), a.flag("force"), j, evalInputs);
    j["out"] = a.text("out");
  }
  if (a.json()) {
    printJson(j);
    return 0;
  }
  const nlohmann::json& ref = j["reference"];
  std::cout << "reference: loss " << ref["loss"].get<double>() << ", perplexity " << ref["perplexity"].get<double>()
            << " over " << ref["positions"].get<int64_t>() << " positions\n"
            << "router       fraction  loss      ppl        top1     KL       flops";
  if (speed) std::cout << "       fwd x   gen x";
  std::cout << "\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    const std::string router =
        r["router"].get<std::string>() + (r.contains("site_group") ? "/" + r["site_group"].get<std::string>() : "");
    std::cout << std::left << std::setw(12) << router << std::right << std::fixed << std::setprecision(3)
              << std::setw(9) << r["fraction"].get<double>() << std::setprecision(4) << std::setw(10)
              << r["loss"].get<double>() << std::setw(11) << r["perplexity"].get<double>() << std::setw(9)
              << r["top1_agreement"].get<double>() << std::setw(9)
              << (std::abs(r["kl"].get<double>()) < 5e-5 ? 0.0 : r["kl"].get<double>())  // no "-0.0000"
              << std::setprecision(3) << std::setw(9) << r["ffn_flops_fraction"].get<double>();
    if (speed && r.contains("speed")) {
      std::cout << std::setprecision(2) << std::setw(8) << r["speed"]["forward_speedup"].get<double>();
      if (r["speed"].contains("generate_speedup"))
        std::cout << std::setw(8) << r["speed"]["generate_speedup"].get<double>();
    } else if (speed) {
      std::cout << std::setw(8) << "-";  // oracle router or the bound: no speed (they need the dense hidden)
    }
    std::cout << "\n";
  }
  if (speed) {
    // The ratios are medians; where single runs spread by more than 2x (a
    // busy machine: other processes on the cores the timing threads use),
    // the medians cannot be trusted and the table says so.
    double worst = 1.0;
    for (const auto& r : results) {
      if (!r.contains("speed")) continue;
      for (const char* what : {"forward", "generate"}) {
        const std::string lo = std::string(what) + "_speedup_min", hi = std::string(what) + "_speedup_max";
        if (r["speed"].contains(lo) && r["speed"].contains(hi) && r["speed"][lo].get<double>() > 0)
          worst = std::max(worst, r["speed"][hi].get<double>() / r["speed"][lo].get<double>());
      }
    }
    if (worst > 2.0)
      std::cout << "note: single timed runs spread up to " << std::setprecision(1) << worst
                << "x around these medians (speedup_min/max in eval.json): the machine was busy; rerun on an idle "
                   "machine or with MOEFY_THREADS=1\n";
  }
  if (spec.generate > 0) printGeneration(j, spec.generate, spec.options.batch);
  if (a.has("out")) std::cout << "wrote " << a.text("out") << "/eval.json\n";
  return 0;
}

// ---- export ------------------------------------------------------------------

int runExport(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), partDir = a.pos(1, "PART_DIR"), routerDir = a.pos(2, "ROUTER_DIR");
  const ExportOptions o = exportOptionsFrom(a);
  fs::path out = a.text("out");
  checkOutput(out, o.force, "MoE export", {modelDir, partDir, routerDir});
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is already a MoE export");
  PartitionData part = PartitionData::read(partDir);
  RouterSet rs = RouterSet::read(routerDir);
  warnLinkProblems("export", ArtefactKind::Partition, partDir);
  warnLinkProblems("export", ArtefactKind::Router, routerDir);
  nlohmann::json block = exportMoe(*loaded.model, part, rs, out, o, *job);
  nlohmann::json j = {{"out", out.string()}, {"moefication", block}};
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "wrote " << out.string() << " (" << block["layers"].size() << " MoE layers, router "
            << block["router"].get<std::string>() << ", top-k " << block["top_k"].dump() << ")\n";
  return 0;
}

// ---- calibrate ---------------------------------------------------------------

int runCalibrate(const Args& a) {
  fs::path moeDir = a.pos(0, "MOE_DIR"), corpus = a.pos(1, "CORPUS");
  fs::path out = a.text("out");
  checkOutput(out, a.flag("force"), "MoE export", {moeDir, corpus});
  CalibrateCorpusOptions c;
  const CalibrateOptions o = calibrateOptionsFrom(a, &c);
  auto job = makeCliJob(a);
  try {
    warnLinkProblems("calibrate", ArtefactKind::MoeExport, moeDir);
  } catch (const Error&) {
    // Not a readable MoE export: runCalibration refuses it with its own message.
  }
  nlohmann::json j = runCalibration(moeDir, corpus, o, c.seqLen, c.tokens, c.split, out, a.flag("force"), *job);
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << std::setprecision(5) << "held-out LM loss     " << j["lm_loss_before"].get<double>() << " -> "
            << j["lm_loss_after"].get<double>() << "\n"
            << "held-out router loss " << j["router_loss_before"].get<double>() << " -> "
            << j["router_loss_after"].get<double>() << "\n"
            << "wrote " << out.string() << "\n";
  return 0;
}

CommandRegistrar routeCmd(routeOptionTable(), runRoute);
CommandRegistrar evalCmd(evalOptionTable(), runEval);
CommandRegistrar exportCmd(exportOptionTable(), runExport);
CommandRegistrar calibrateCmd(calibrateOptionTable(), runCalibrate);

}  // namespace

}  // namespace moefy::cli
