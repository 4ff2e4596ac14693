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

// ---- token sequences -------------------------------------------------------

/// Token sequences for evaluation and calibration. CORPUS is a text corpus
/// (.txt, .jsonl or a folder; tokenised with the model's tokenizer; `split`
/// selects the held-out or training documents) or a token-id file (".ids": one
/// sequence per line, whitespace-separated ids, used whole). Sequences are cut
/// into windows of seqLen, up to `budget` tokens (0 = all).
std::vector<std::vector<int64_t>> readSequences(const fs::path& corpus, const LoadedModel& loaded, int seqLen,
                                                int64_t budget, Split split, JobContext* job) {
  if (seqLen < 2) throw ParameterError("--seq-len must be at least 2");
  if (!fs::exists(corpus)) throw IoError(corpus.string() + ": no such corpus");
  std::vector<std::vector<int64_t>> out;
  int64_t total = 0;
  auto add = [&](std::vector<int64_t> ids) {
    for (size_t s = 0; s < ids.size() && (budget == 0 || total < budget); s += seqLen) {
      size_t n = std::min<size_t>(seqLen, ids.size() - s);
      if (budget) n = std::min<size_t>(n, static_cast<size_t>(budget - total));
      if (n < 2) break;
      out.emplace_back(ids.begin() + s, ids.begin() + s + n);
      total += static_cast<int64_t>(n);
    }
  };
  const int vocab = loaded.model->config().vocab;
  if (corpus.extension() == ".ids") {
    std::ifstream in(corpus);
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line) && (budget == 0 || total < budget)) {
      ++lineNo;
      std::istringstream ls(line);
      std::vector<int64_t> ids;
      std::string tok;
      while (ls >> tok) {
        try {
          size_t used = 0;
          long long v = std::stoll(tok, &used);
          if (used != tok.size()) throw std::invalid_argument(tok);
          if (v < 0 || v >= vocab)
            throw FormatError(corpus.string() + ":" + std::to_string(lineNo) + ": token id " + tok +
                              " outside the vocabulary [0, " + std::to_string(vocab) + ")");
          ids.push_back(v);
        } catch (const std::logic_error&) {
          throw FormatError(corpus.string() + ":" + std::to_string(lineNo) + ": '" + tok + "' is not a token id");
        }
      }
      if (!ids.empty()) add(std::move(ids));
    }
    if (out.empty()) throw FormatError(corpus.string() + ": no sequences of at least 2 tokens");
    return out;
  }
  if (!loaded.tokenizer)
    throw FormatError(loaded.model->dir().string() + ": a text corpus needs the model's tokenizer (" +
                      loaded.tokenizerError + ")");
  auto c = Corpus::open(corpus);
  SequenceOptions so;
  so.seqLen = seqLen;
  so.tokenBudget = budget;
  so.split = split;
  forEachSequence(
      *c, *loaded.tokenizer, so,
      [&](const Sequence& s) {
        if (s.ids.size() >= 2) out.emplace_back(s.ids.begin(), s.ids.end());
        return true;
      },
      job);
  if (out.empty())
    throw FormatError(corpus.string() + ": no sequences of at least 2 tokens in the " +
                      (split == Split::HeldOut ? "held-out" : split == Split::Train ? "training" : "whole") +
                      " split");
  for (const auto& s : out)
    for (int64_t id : s)
      if (id < 0 || id >= vocab)
        throw FormatError(corpus.string() + ": the tokenizer produced id " + std::to_string(id) +
                          " outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  return out;
}

Split parseSplit(const Args& a, Split fallback) {
  if (!a.has("split")) return fallback;
  std::string s = a.get("split");
  if (s == "heldout" || s == "held-out") return Split::HeldOut;
  if (s == "train") return Split::Train;
  if (s == "all") return Split::All;
  throw ParameterError("--split must be heldout, train or all, got '" + s + "'");
}

int64_t maskIdOf(const LoadedModel& loaded) {
  if (!loaded.tokenizer) return -1;
  auto id = loaded.tokenizer->tokenToId("[MASK]");
  if (!id) id = loaded.tokenizer->tokenToId("<mask>");
  return id ? *id : -1;
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
  std::vector<double> sweep;
  if (a.has("sweep")) {
    sweep = parseDoubleList(a.get("sweep"), "--sweep");
    for (double f : sweep)
      if (!(f > 0 && f <= 1)) throw ParameterError("--sweep: fraction " + std::to_string(f) + " outside (0, 1]");
  }
  if (topK && !sweep.empty()) throw ParameterError("give --top-k or --sweep, not both");

  // The reference and the MoE bases (one per router).
  std::shared_ptr<const FfnOverride> reference;  // null = the dense FFNs
  std::vector<std::pair<std::string, std::shared_ptr<MoeFfn>>> bases;
  nlohmann::json source;
  if (a.has("partition")) {
    if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": --partition/--router need the dense source model");
    PartitionData part = PartitionData::read(a.get("partition"));
    for (const auto& rdir : a.getAll("router")) {
      RouterSet rs = RouterSet::read(rdir);
      bases.emplace_back(routerKindName(rs.kind), buildMoeFfn(m, part, rs, topK));
    }
    source = {{"partition", a.get("partition")}, {"routers", a.getAll("router")}};
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
    source = {{"moe", a.get("moe")}};
  } else if (loaded.isMoe()) {
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(m.ffnOverride());
    reference = moe->withFraction(1.0);  // all experts: the dense FFN up to summation order
    auto base = topK ? moe->withTopK(std::vector<int>(m.config().nLayer, topK)) : std::make_shared<MoeFfn>(*moe);
    bases.emplace_back(loaded.moefication.value("router", "moe"), base);
    source = {{"moe", modelDir.string()}, {"reference", "all experts"}};
  } else {
    throw ParameterError("give --moe MOE_DIR or --partition PART_DIR --router ROUTER_DIR (or a MoE export as MODEL_DIR)");
  }
  if (topK)
    for (const auto& [name, b] : bases)
      for (const auto& l : b->layers())
        if (l.weights && topK > l.weights->layout.experts)
          throw ParameterError("--top-k " + std::to_string(topK) + " outside [1, " + std::to_string(l.weights->layout.experts) + "]");
  m.setFfnOverride(nullptr);

  std::vector<EvalCandidate> cands;
  for (const auto& [name, b] : bases) {
    if (sweep.empty()) {
      double frac = 0;
      int n = 0;
      for (const auto& l : b->layers())
        if (l.weights) frac += double(l.topK) / l.weights->layout.experts, ++n;
      cands.push_back({name, n ? frac / n : 1.0, b});
    } else {
      for (double f : sweep) cands.push_back({name, f, b->withFraction(f)});
    }
  }
  const int seqLen = static_cast<int>(a.getInt("seq-len", 128));
  auto seqs = readSequences(corpus, loaded, seqLen, a.getInt("tokens", 4096), parseSplit(a, Split::HeldOut), job.get());
  EvalOptions eo;
  eo.batch = static_cast<int>(a.getInt("batch", 8));
  eo.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  eo.maskTokenId = maskIdOf(loaded);
  auto figs = evaluateQuality(m, reference, cands, seqs, eo, *job);

  nlohmann::json results = nlohmann::json::array();
  const bool speed = a.has("speed");
  double denseFwd = 0, denseGen = 0;
  const double minSec = a.getDouble("speed-seconds", 1.0);
  const std::vector<int64_t> prompt(seqs[0].begin(), seqs[0].begin() + 1);
  int genTokens = 32;
  if (m.config().pos == PosKind::Learned) genTokens = std::max(1, std::min(genTokens, m.config().maxPos - 1));
  if (speed) {
    job->setStage("eval: speed");
    denseFwd = forwardTokensPerSecond(m, reference, seqs, eo.batch, minSec);
    if (m.config().causal)
      denseGen = generationTokensPerSecond(m, reference, prompt, genTokens);
  }
  for (size_t i = 1; i < figs.size(); ++i) {
    nlohmann::json r = figs[i].toJson();
    r["router"] = cands[i - 1].name;
    r["loss_delta"] = figs[i].loss - figs[0].loss;
    if (speed) {
      double fwd = forwardTokensPerSecond(m, cands[i - 1].moe, seqs, eo.batch, minSec);
      r["speed"] = {{"forward_tokens_per_s", fwd}, {"dense_forward_tokens_per_s", denseFwd},
                    {"forward_speedup", fwd / denseFwd}};
      if (m.config().causal) {
        double gen = generationTokensPerSecond(m, cands[i - 1].moe, prompt, genTokens);
        r["speed"]["generate_tokens_per_s"] = gen;
        r["speed"]["dense_generate_tokens_per_s"] = denseGen;
        r["speed"]["generate_speedup"] = gen / denseGen;
      }
    }
    results.push_back(r);
  }
  int64_t tokens = 0;
  for (const auto& s : seqs) tokens += static_cast<int64_t>(s.size());
  nlohmann::json j;
  j["format"] = "moefy-eval";
  j["version"] = 1;
  j["tool_version"] = MOEFY_VERSION;
  j["model"] = {{"path", modelDir.string()}, {"fingerprint", m.fingerprint()}, {"arch", archName(m.config().arch)},
                {"objective", m.config().causal ? "next-token" : "masked-lm"}};
  j["corpus"] = {{"path", corpus.string()}, {"sequences", seqs.size()}, {"tokens", tokens}, {"seq_len", seqLen}};
  j["source"] = source;
  j["reference"] = figs[0].toJson();
  j["results"] = results;
  if (a.has("out")) {
    writeFolderAtomic(a.get("out"), a.has("force"),
                      [&](const fs::path& tmp) { writeFileAtomic(tmp / "eval.json", j.dump(2) + "\n"); });
    j["out"] = a.get("out");
  }
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "reference: loss " << figs[0].loss << ", perplexity " << figs[0].perplexity << " over "
            << figs[0].positions << " positions\n"
            << "router       fraction  loss      ppl        top1     KL";
  if (speed) std::cout << "       fwd x   gen x";
  std::cout << "\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    std::cout << std::left << std::setw(12) << r["router"].get<std::string>() << std::right << std::fixed
              << std::setprecision(3) << std::setw(9) << r["fraction"].get<double>() << std::setprecision(4)
              << std::setw(10) << r["loss"].get<double>() << std::setw(11) << r["perplexity"].get<double>()
              << std::setw(9) << r["top1_agreement"].get<double>() << std::setw(9) << r["kl"].get<double>();
    if (speed) {
      std::cout << std::setprecision(2) << std::setw(8) << r["speed"]["forward_speedup"].get<double>();
      if (r["speed"].contains("generate_speedup")) std::cout << std::setw(8) << r["speed"]["generate_speedup"].get<double>();
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
  auto loaded = loadModel(moeDir);
  if (!loaded.isMoe()) throw ParameterError(moeDir.string() + ": not a MoE export (run 'moefy export' first)");
  o.maskTokenId = maskIdOf(loaded);
  auto seqs = readSequences(corpus, loaded, static_cast<int>(a.getInt("seq-len", 64)), a.getInt("tokens", 20000),
                            parseSplit(a, Split::Train), job.get());
  // Every tenth sequence is held out for the before/after figures.
  std::vector<std::vector<int64_t>> train, held;
  for (size_t i = 0; i < seqs.size(); ++i) (i % 10 == 9 ? held : train).push_back(seqs[i]);
  if (train.empty()) train = held;
  CalibrateResult r = calibrateMoe(*loaded.model, train, held, o, *job);
  nlohmann::json block = loaded.moefication;
  block["calibration"] = {{"steps", o.steps}, {"experts", o.experts}, {"lr", o.lr}, {"corpus", corpus.string()},
                          {"lm_loss_before", r.lmLossBefore}, {"lm_loss_after", r.lmLossAfter},
                          {"router_loss_before", r.routerLossBefore}, {"router_loss_after", r.routerLossAfter}};
  auto moe = std::dynamic_pointer_cast<const MoeFfn>(loaded.model->ffnOverride());
  RouterKind kind = routerKindFromName(loaded.moefication.value("router", "oracle"), "moefication.router");
  writeMoeFolder(*loaded.model, *moe, kind, block, out, a.has("force"), *job);
  nlohmann::json j = r.toJson();
  j["out"] = out.string();
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << std::setprecision(5) << "held-out LM loss     " << r.lmLossBefore << " -> " << r.lmLossAfter << "\n"
            << "held-out router loss " << r.routerLossBefore << " -> " << r.routerLossAfter << "\n"
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
