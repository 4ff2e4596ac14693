// moefy route / eval / export / calibrate: routers, MoE evaluation, MoE
// checkpoints (issue 5). See docs/moe.md.
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_run.h"
#include "analysis/eval/sequences.h"
#include "analysis/model/loader.h"
#include "analysis/moe/calibrate.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/route_build.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

Split parseSplit(const Args& a, Split fallback) {
  return a.has("split") ? parseSplitName(a.get("split")) : fallback;
}

int parseTopK(const Args& a) {
  long long k = a.getInt("top-k", 0);
  if (a.has("top-k") && k < 1) throw ParameterError("--top-k must be at least 1, got " + std::to_string(k));
  return static_cast<int>(k);
}

// ---- route -------------------------------------------------------------------

int runRoute(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), recDir = a.pos(1, "REC_DIR"), partDir = a.pos(2, "PART_DIR");
  if (!a.has("out")) throw ParameterError("--out ROUTER_DIR is required");
  if (!a.has("router")) throw ParameterError("--router oracle|similarity|mlp is required");
  if (a.has("top-k") && a.has("top-fraction")) throw ParameterError("give --top-k or --top-fraction, not both");
  RouteOptions o;
  o.kind = routerKindFromName(a.get("router"), "--router");
  o.topK = parseTopK(a);
  o.topFraction = a.getDouble("top-fraction", 0.25);
  o.epochs = static_cast<int>(a.getInt("epochs", 30));
  o.batch = static_cast<int>(a.getInt("batch", 512));
  o.lr = a.getDouble("lr", 0.01);
  o.heldOut = a.getDouble("held-out", 0.1);
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is a MoE export; route the dense source model");
  const Model& m = *loaded.model;
  PartitionData part = PartitionData::read(partDir);
  part.checkModel(m);
  SampleData samples = SampleData::read(recDir, part.layers, m.config().dModel, m.config().dFF);
  RouterSet rs = buildRouters(m, part, samples, o, *job);
  writeFolderAtomic(a.get("out"), a.has("force"), [&](const fs::path& tmp) { rs.writeInto(tmp); });
  nlohmann::json j;
  j["out"] = a.get("out");
  j["kind"] = routerKindName(rs.kind);
  j["layers"] = rs.layers;
  j["top_k"] = rs.topK;
  j["experts"] = rs.experts;
  j["metrics"] = rs.metrics;
  if (o.kind == RouterKind::Mlp) j["training"] = rs.training;
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "router " << routerKindName(rs.kind) << " -> " << a.get("out") << "\n"
            << "layer  experts  top-k  mass_recall  overlap\n";
  for (size_t i = 0; i < rs.layers.size(); ++i) {
    const auto& mm = rs.metrics[std::to_string(rs.layers[i])];
    std::cout << std::setw(5) << rs.layers[i] << std::setw(9) << rs.experts[i] << std::setw(7) << rs.topK[i]
              << std::setw(13) << std::fixed << std::setprecision(4) << mm["mass_recall"].get<double>() << std::setw(9)
              << mm["overlap"].get<double>() << "\n";
  }
  return 0;
}

// ---- eval --------------------------------------------------------------------

int runEval(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), corpus = a.pos(1, "CORPUS");
  if (a.has("moe") && (a.has("partition") || a.has("router")))
    throw ParameterError("give --moe MOE_DIR or --partition/--router, not both");
  if (a.has("partition") != a.has("router")) throw ParameterError("--partition and --router go together");
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir);
  Model& m = *loaded.model;
  const int topK = parseTopK(a);
  EvalRunSpec spec;
  if (a.has("sweep")) {
    spec.sweep = parseDoubleList(a.get("sweep"), "--sweep");
    checkSweep(spec.sweep);
  }
  if (topK && !spec.sweep.empty()) throw ParameterError("give --top-k or --sweep, not both");

  // The reference and the MoE bases (one per router).
  auto& bases = spec.bases;
  if (a.has("partition")) {
    if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": --partition/--router need the dense source model");
    PartitionData part = PartitionData::read(a.get("partition"));
    for (const auto& rdir : a.getAll("router")) {
      RouterSet rs = RouterSet::read(rdir);
      bases.emplace_back(routerKindName(rs.kind), buildMoeFfn(m, part, rs, topK));
    }
    spec.source = {{"partition", a.get("partition")}, {"routers", a.getAll("router")}};
  } else if (a.has("moe")) {
    if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": --moe needs the dense source model as MODEL_DIR");
    auto moeLoaded = loadModel(a.get("moe"));
    if (!moeLoaded.isMoe()) throw ParameterError(a.get("moe") + ": not a MoE export (no moefication block)");
    std::string src = moeLoaded.moefication["source_model"].value("fingerprint", "");
    if (src != m.fingerprint())
      throw ParameterError(a.get("moe") + ": MoE was exported from model " + src + ", not from " + modelDir.string() +
                           " (fingerprint " + m.fingerprint() + ")");
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(moeLoaded.model->ffnOverride());
    auto base = topK ? moe->withTopK(std::vector<int>(m.config().nLayer, topK)) : std::make_shared<MoeFfn>(*moe);
    bases.emplace_back(moeLoaded.moefication.value("router", "moe"), base);
    spec.source = {{"moe", a.get("moe")}};
  } else if (loaded.isMoe()) {
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(m.ffnOverride());
    spec.reference = moe->withFraction(1.0);  // all experts: the dense FFN up to summation order
    auto base = topK ? moe->withTopK(std::vector<int>(m.config().nLayer, topK)) : std::make_shared<MoeFfn>(*moe);
    bases.emplace_back(loaded.moefication.value("router", "moe"), base);
    spec.source = {{"moe", modelDir.string()}, {"reference", "all experts"}};
  } else {
    throw ParameterError("give --moe MOE_DIR or --partition PART_DIR --router ROUTER_DIR (or a MoE export as MODEL_DIR)");
  }
  if (topK)
    for (const auto& [name, b] : bases)
      for (const auto& l : b->layers())
        if (l.weights && topK > l.weights->layout.experts)
          throw ParameterError("--top-k " + std::to_string(topK) + " outside [1, " + std::to_string(l.weights->layout.experts) + "]");
  m.setFfnOverride(nullptr);

  const int seqLen = static_cast<int>(a.getInt("seq-len", 128));
  auto seqs = readSequences(corpus, loaded, seqLen, a.getInt("tokens", 4096), parseSplit(a, Split::HeldOut), job.get());
  spec.options.batch = static_cast<int>(a.getInt("batch", 8));
  spec.options.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  spec.options.maskTokenId = maskTokenIdOf(loaded);
  spec.speed = a.has("speed");
  spec.speedSeconds = a.getDouble("speed-seconds", 1.0);
  spec.modelPath = modelDir.string();
  spec.corpusPath = corpus.string();
  spec.seqLen = seqLen;
  nlohmann::json j = runEvaluation(m, spec, seqs, *job);
  const nlohmann::json& results = j["results"];
  const bool speed = spec.speed;
  if (a.has("out")) {
    writeEvalFolder(a.get("out"), a.has("force"), j);
    j["out"] = a.get("out");
  }
  if (a.json()) {
    printJson(j);
    return 0;
  }
  const nlohmann::json& ref = j["reference"];
  std::cout << "reference: loss " << ref["loss"].get<double>() << ", perplexity " << ref["perplexity"].get<double>()
            << " over " << ref["positions"].get<int64_t>() << " positions\n"
            << "router       fraction  loss      ppl        top1     KL";
  if (speed) std::cout << "       fwd x   gen x";
  std::cout << "\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    std::cout << std::left << std::setw(12) << r["router"].get<std::string>() << std::right << std::fixed
              << std::setprecision(3) << std::setw(9) << r["fraction"].get<double>() << std::setprecision(4)
              << std::setw(10) << r["loss"].get<double>() << std::setw(11) << r["perplexity"].get<double>()
              << std::setw(9) << r["top1_agreement"].get<double>() << std::setw(9) << r["kl"].get<double>();
    if (speed && r.contains("speed")) {
      std::cout << std::setprecision(2) << std::setw(8) << r["speed"]["forward_speedup"].get<double>();
      if (r["speed"].contains("generate_speedup")) std::cout << std::setw(8) << r["speed"]["generate_speedup"].get<double>();
    } else if (speed) {
      std::cout << std::setw(8) << "-";  // oracle router: no speed (it needs the dense hidden)
    }
    std::cout << "\n";
  }
  if (a.has("out")) std::cout << "wrote " << a.get("out") << "/eval.json\n";
  return 0;
}

// ---- export ------------------------------------------------------------------

int runExport(const Args& a) {
  fs::path modelDir = a.pos(0, "MODEL_DIR"), partDir = a.pos(1, "PART_DIR"), routerDir = a.pos(2, "ROUTER_DIR");
  if (!a.has("out")) throw ParameterError("--out MOE_DIR is required");
  ExportOptions o;
  o.topK = parseTopK(a);
  o.force = a.has("force");
  fs::path out = a.get("out");
  if (fs::exists(out) && !o.force) throw IoError(out.string() + ": already exists (use --force to replace it)");
  auto job = makeCliJob(a);
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is already a MoE export");
  PartitionData part = PartitionData::read(partDir);
  RouterSet rs = RouterSet::read(routerDir);
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
  if (!a.has("out")) throw ParameterError("--out MOE_DIR2 is required");
  fs::path out = a.get("out");
  if (fs::exists(out) && !a.has("force")) throw IoError(out.string() + ": already exists (use --force to replace it)");
  CalibrateOptions o;
  o.steps = static_cast<int>(a.getInt("steps", 100));
  o.experts = a.has("experts");
  o.lr = a.getDouble("lr", 1e-3);
  o.batch = static_cast<int>(a.getInt("batch", 4));
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  auto job = makeCliJob(a);
  nlohmann::json j = runCalibration(moeDir, corpus, o, static_cast<int>(a.getInt("seq-len", 64)), a.getInt("tokens", 20000),
                                    parseSplit(a, Split::Train), out, a.has("force"), *job);
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

CommandRegistrar routeCmd(
    {"route", "build routers (oracle | similarity | mlp) for a partition",
     "usage: moefy route MODEL_DIR REC_DIR PART_DIR --router oracle|similarity|mlp\n"
     "                   [--top-k K | --top-fraction F] --out ROUTER_DIR [--force] [--json]\n"
     "                   [--epochs 30] [--batch 512] [--lr 0.01] [--held-out 0.1] [--seed 0]\n\n"
     "Builds one router per partitioned layer from the recording's samples\n"
     "(blk.L.ffn_in / blk.L.ffn_act):\n"
     "  oracle      top-k experts by activation mass (ground truth, needs the dense hidden)\n"
     "  similarity  expert centroids of the L2-normalised W1 rows (gate rows for gated FFNs)\n"
     "  mlp         MoEfication's Linear(d_model,E)-Tanh-Linear(E,E) router trained with\n"
     "              BCE-with-logits on the per-expert activation mass / its max (Adam)\n"
     "The top-k defaults to 25% of the experts. Reports, per layer on the held-out samples,\n"
     "mass_recall (share of the oracle top-k's activation mass that the router's top-k\n"
     "captures) and overlap (mean |router top-k & oracle top-k| / k). Writes router.json and\n"
     "router.safetensors (docs/formats.md). Refuses an existing ROUTER_DIR unless --force.\n",
     {"force", "quiet"}, runRoute});

CommandRegistrar evalCmd(
    {"eval", "quality and speed of a MoEfied model against the dense one",
     "usage: moefy eval MODEL_DIR CORPUS [--moe MOE_DIR | --partition PART_DIR --router ROUTER_DIR\n"
     "                  [--router ROUTER_DIR2 ...]] [--sweep 0.1,0.25,0.5,1.0 | --top-k K]\n"
     "                  [--tokens 4096] [--seq-len 128] [--split heldout] [--batch 8] [--speed]\n"
     "                  [--speed-seconds 1] [--seed 0]\n"
     "                  [--out EVAL_DIR] [--force] [--json]\n\n"
     "CORPUS is a text corpus (.txt, .jsonl or a folder, tokenised with the model's tokenizer;\n"
     "--split heldout (default) | train | all picks its documents) or a token-id file (*.ids:\n"
     "one sequence per line, whitespace-separated ids). Reports, for each router and active-expert fraction: LM loss and perplexity (masked-LM\n"
     "loss for BERT), top-1 agreement with the dense model, KL(dense || MoE), and the relative\n"
     "error of each layer's FFN output. MODEL_DIR may itself be a MoE export; its reference is\n"
     "then the MoE with all experts selected. --speed adds forward and greedy-generation\n"
     "tokens/s, dense vs MoE. --out writes EVAL_DIR/eval.json (docs/formats.md).\n",
     {"speed", "force", "quiet"}, runEval});

CommandRegistrar exportCmd(
    {"export", "write a MoEfied checkpoint that loads like any model folder",
     "usage: moefy export MODEL_DIR PART_DIR ROUTER_DIR [--top-k K] --out MOE_DIR [--force] [--json]\n\n"
     "Writes MOE_DIR atomically: config.json (the original keys plus a 'moefication' block),\n"
     "model.safetensors (the non-FFN tensors, unchanged), moe.safetensors (expert weights\n"
     "grouped per expert, router weights, labels) and the tokenizer files. Refuses an\n"
     "existing MOE_DIR unless --force. See docs/moe.md.\n",
     {"force", "quiet"}, runExport});

CommandRegistrar calibrateCmd(
    {"calibrate", "fine-tune the routers (and experts) of a MoE export",
     "usage: moefy calibrate MOE_DIR CORPUS --steps N --out MOE_DIR2 [--experts] [--lr 0.001]\n"
     "                       [--batch 4] [--seq-len 64] [--tokens 20000] [--split train] [--seed 0]\n"
     "                       [--force] [--json]\n\n"
     "MoEfication's parameter calibration with autograd: trains the routers on the oracle\n"
     "target at the FFN inputs the MoE model sees (BCE), and with --experts also the experts\n"
     "on the LM loss. Every tenth sequence is held out; the loss before and after is shown.\n"
     "CORPUS is a text corpus (training split by default) or a token-id file (*.ids).\n",
     {"experts", "force", "quiet"}, runCalibrate});

}  // namespace

}  // namespace moefy::cli
