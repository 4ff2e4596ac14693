// moefy demo --translation: the MoEfication study of a translation
// Transformer (issue 15) on the bundled English -> Spanish T5
// (data/models/bible-t5) and the verse-aligned Bible corpus
// (data/corpus/bible-en-es). Records the encoder and decoder FFNs (the
// decoder on teacher-forced targets), splits them (coact, kmeans, random),
// builds the oracle, similarity and mlp routers, then answers the study's two
// questions with greedy translation of the test pairs: (1) whether to use MoE
// in the encoder, the decoder or both (eval's site groups), and (2) how many
// experts (the active-fraction sweep), with BLEU, chrF and decoding time per
// source-length bucket, dense vs MoE. Exports the coact + mlp MoE at a
// quarter of the experts, reloads it and checks that it decodes as the
// in-memory MoE did. Every stage is the subcommand a user would type.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/eval/eval_data.h"
#include "analysis/eval/eval_file.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/model/site.h"
#include "analysis/project/project.h"
#include "analysis/record/recording.h"
#include "analysis/record/sparsity.h"
#include "analysis/report/report.h"
#include "app/cli/demo.h"

namespace moefy::cli::demo {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kMethods = {"coact", "kmeans", "random"};
const std::vector<std::string> kRouters = {"oracle", "similarity", "mlp"};
const std::vector<std::string> kGroups = {"enc", "dec", "both"};

// The result of router / site group / fraction in an eval.json (nullptr if absent).
const json* resultOf(const json& ev, const std::string& router, const std::string& group, double fraction) {
  for (const auto& r : ev["results"])
    if (r.value("router", "") == router && r.value("site_group", "") == group &&
        std::abs(r.value("fraction", -1.0) - fraction) < 1e-9)
      return &r;
  return nullptr;
}

double gen(const json& r, const char* key) { return r["generation"].value(key, std::nan("")); }

// Decoding time per generated token (ms): like-for-like when a MoE emits
// translations of another length than the dense model (ms per sentence then
// measures the length as much as the speed).
double msPerToken(const json& r) {
  const json& g = r["generation"];
  const double tokens = g.value("generated_tokens", 0.0);
  return tokens > 0 ? g.value("seconds_per_sentence", 0.0) * g.value("sentences", 0.0) / tokens * 1e3 : std::nan("");
}

std::string pct(double v, int digits = 1) { return fmt(v * 100, digits) + " %"; }

struct TranslationRun {
  fs::path model, trainCorpus, evalCorpus;
  std::string seed;
  int experts = 16;
  double exportFraction = 0.25;
  std::vector<double> sweep;
};

void writeTranslationReport(const fs::path& dir, const TranslationRun& run,
                            const std::vector<std::pair<std::string, double>>& stageTimes) {
  using namespace moefy::report;
  Report rep(dir, "MoEfication of a translation model: T5 English -> Spanish");
  const json manifest = readJsonFile(dir / "recording" / "manifest.json");
  const int dFF = manifest["model"].value("d_ff", 0);
  std::string trained;
  if (fs::exists(run.model / "training.json")) {
    const json t = readJsonFile(run.model / "training.json");
    trained = " It was trained by `moefy train` for " + std::to_string(t["options"].value("steps", 0)) +
              " steps (held-out loss " + fmt(t.value("heldout_loss", 0.0)) + " nats per target token).";
  }
  rep.paragraph("Model " + run.model.string() + " (T5 v1.0 style, ReLU FFNs, d_ff " + std::to_string(dFF) + ")." +
                trained + " Recorded on " + std::to_string(manifest.value("tokens", int64_t{0})) +
                " tokens (encoder: source tokens; decoder: teacher-forced target tokens) of " +
                run.trainCorpus.string() + ", in corpus order; translated and scored on " + run.evalCorpus.string() +
                ". Seed " + run.seed + ", " + std::to_string(run.experts) + " experts of " +
                std::to_string(dFF / std::max(1, run.experts)) + " neurons per FFN. Tool version " MOEFY_VERSION ".");

  // Sparsity of every encoder and decoder FFN.
  const Recording recording = Recording::open(dir / "recording");
  Chart sparsity;
  sparsity.kind = Chart::Kind::Bar;
  sparsity.title = "Active FFN neurons per token";
  sparsity.xLabel = "FFN site";
  sparsity.yLabel = "active neurons (% of d_ff)";
  Series meanS{"mean", {}, {}}, deadS{"dead neurons", {}, {}};
  std::vector<std::vector<std::string>> sparsityRows;
  double encMean = 0, decMean = 0;
  int encN = 0, decN = 0;
  for (size_t i = 0; i < recording.layers().size(); ++i) {
    const Site& site = recording.sites()[i];
    const LayerSparsity s = layerSparsity(recording, recording.layers()[i]);
    const double mean = s.meanActiveShare * 100, dead = static_cast<double>(s.dead) / s.dFF * 100;
    sparsity.categories.push_back(site.name());
    meanS.y.push_back(mean);
    deadS.y.push_back(dead);
    (site.stack == SiteStack::Decoder ? decMean : encMean) += mean;
    ++(site.stack == SiteStack::Decoder ? decN : encN);
    sparsityRows.push_back(
        {site.name(), fmt(mean, 1) + " %", fmt(s.sdActiveShare * 100, 1) + " %", fmt(dead, 1) + " %"});
  }
  sparsity.series = {meanS, deadS};
  encMean /= std::max(1, encN);
  decMean /= std::max(1, decN);
  rep.heading("Activation sparsity");
  rep.paragraph("On average " + fmt(encMean, 1) + " % of the encoder's and " + fmt(decMean, 1) +
                " % of the decoder's FFN neurons are active (h > 0) on a token. " +
                (std::max(encMean, decMean) < 30
                     ? "The ReLU FFNs are sparse, which is what MoEfication relies on."
                     : "These FFNs are not very sparse, so a small active fraction must drop active neurons; "
                       "expect a clear quality loss."));
  rep.table({"site", "mean active", "spread (sd)", "dead neurons"}, sparsityRows);
  rep.figure("sparsity", sparsity,
             "Share of FFN neurons active per token (encoder and decoder), and never-active "
             "neurons, per site.");

  // Expert construction.
  const int kq = std::max(1, static_cast<int>(std::lround(run.experts * run.exportFraction)));
  std::vector<std::vector<std::string>> partRows;
  for (const auto& m : kMethods) {
    const json pj = readJsonFile(dir / "partitions" / m / "partition.json");
    double enc = 0, dec = 0;
    int ne = 0, nd = 0;
    for (auto it = pj["metrics"].begin(); it != pj["metrics"].end(); ++it) {
      const auto site = parseSiteKey(it.key());
      const double r = it.value()["recall_at_k"].at(kq - 1).get<double>();
      if (site && site->stack == SiteStack::Decoder)
        dec += r, ++nd;
      else
        enc += r, ++ne;
    }
    partRows.push_back({m, fmt(enc / std::max(1, ne)), fmt(dec / std::max(1, nd))});
  }
  rep.heading("Expert construction");
  rep.paragraph("Oracle recall@" + std::to_string(kq) + ": the share of a token's activation mass in its best " +
                std::to_string(kq) + " of " + std::to_string(run.experts) + " experts (mean over sites).");
  rep.table({"split", "recall@" + std::to_string(kq) + " encoder", "recall@" + std::to_string(kq) + " decoder"},
            partRows);

  // Question 1: which stacks should use MoE.
  const json ev = readEvalFile(dir / "eval" / "coact" / "eval.json");
  const json& ref = ev["reference"];
  const double denseBleu = gen(ref, "bleu"), denseMs = gen(ref, "seconds_per_sentence") * 1e3;
  rep.heading("Whether to use MoE: encoder, decoder or both");
  rep.paragraph("Dense model: BLEU " + fmt(denseBleu, 2) + ", chrF " + fmt(gen(ref, "chrf"), 2) + ", " +
                fmt(denseMs, 1) + " ms per sentence (greedy, KV cache, padded batches), over " +
                std::to_string(ref["generation"].value("sentences", 0)) +
                " test sentences. MoE rows: the coact split, " + pct(run.exportFraction, 1) +
                " of the experts active in the MoEfied FFNs.");
  // Speed-ups are per generated token and against the same router and sites with every expert active: that
  // run decodes the same tokens as the dense model through the same MoE code path, and is timed next to the
  // other rows (the dense reference is timed first, cold, which biased a dense baseline).
  auto allExpertsMsTok = [&](const json& e, const std::string& router, const std::string& group) {
    const json* all = resultOf(e, router, group, 1.0);
    return all ? msPerToken(*all) : std::nan("");
  };
  std::vector<std::vector<std::string>> q1Rows;
  const double denseMsTok = msPerToken(ref);
  q1Rows.push_back({"dense", "1.000", fmt(denseBleu, 2), fmt(gen(ref, "chrf"), 2), "1.000",
                    fmt(ref.value("perplexity", 0.0), 2), "1.000", fmt(denseMsTok, 3), "-"});
  struct GroupResult {
    double ppl = 0, top1 = 0, bleu = 0, speedup = 0;
  };
  std::map<std::string, GroupResult> mlpGroups;
  for (const auto& r : kRouters)
    for (const auto& g : kGroups)
      if (const json* x = resultOf(ev, r, g, run.exportFraction)) {
        const double speedup = allExpertsMsTok(ev, r, g) / msPerToken(*x);
        if (r == "mlp")
          mlpGroups[g] = {x->value("perplexity", 0.0), x->value("top1_agreement", 0.0), gen(*x, "bleu"), speedup};
        q1Rows.push_back({r + " / " + g, fmt(x->value("ffn_flops_fraction", 0.0), 3), fmt(gen(*x, "bleu"), 2),
                          fmt(gen(*x, "chrf"), 2), fmt(gen(*x, "identical_to_reference"), 3),
                          fmt(x->value("perplexity", 0.0), 2), fmt(x->value("top1_agreement", 0.0), 3),
                          fmt(msPerToken(*x), 3), r == "oracle" ? "-" : fmt(speedup, 2)});
      }
  rep.table({"router / MoE sites", "FFN FLOPs", "BLEU", "chrF", "same translation", "target ppl", "top-1 agreement",
             "ms/token", "speed-up"},
            q1Rows);
  rep.paragraph(
      "Columns: FFN FLOPs = multiply-adds of the FFNs (router included) relative to the dense FFNs, over the "
      "teacher-forced tokens of both stacks (a stack without MoE counts as 1; the oracle computes the dense hidden "
      "to choose its experts, so it costs more than dense and has no speed-up); BLEU and chrF of the greedy "
      "translations against the references; same translation = share of sentences translated exactly as by the "
      "dense model; target ppl and top-1 agreement (with the dense model's next token) teacher-forced on the same "
      "pairs; ms/token = decoding time per generated token; speed-up = the same router and sites with every "
      "expert active (which decode the dense model's tokens through the same code path) over this row, per "
      "token.");
  {
    // How far the dense reference's timing is from the all-experts runs that decode the same tokens.
    double lo = 1e300, hi = -1e300;
    for (const auto& r : ev["results"])
      if (r.value("router", "") != "oracle" && std::abs(r.value("fraction", 0.0) - 1.0) < 1e-9 &&
          r.contains("generation")) {
        const double ratio = denseMsTok / msPerToken(r);
        lo = std::min(lo, ratio);
        hi = std::max(hi, ratio);
      }
    if (hi >= lo)
      rep.paragraph(
          "Timing noise: the all-experts runs decode the dense model's tokens, yet the dense reference "
          "(timed first) took " +
          fmt(lo, 2) + "-" + fmt(hi, 2) +
          "x their time per token in this run (one timing per row on a shared machine). Differences of "
          "that size are not evidence; the speed-ups above are against the all-experts runs for that "
          "reason.");
  }
  const double truncated =
      ref["generation"].value("truncated", 0.0) / std::max(1.0, ref["generation"].value("sentences", 0.0));
  const bool bleuIsNoise = denseBleu < 2.0;
  if (bleuIsNoise)
    rep.paragraph("Read BLEU with care here: the dense model reaches only " + fmt(denseBleu, 2) +
                  " BLEU, and its greedy decoding runs to the token limit without </s> on " + pct(truncated, 0) +
                  " of the sentences (a small, briefly trained model repeats itself). At this level BLEU "
                  "differences are noise, so the conclusions below rest on the target perplexity and the top-1 "
                  "agreement with the dense model.");
  if (!mlpGroups.empty()) {
    // The stacks that lose the least: the smallest teacher-forced perplexity with the mlp router.
    std::string best;
    for (const auto& [g, res] : mlpGroups)
      if (best.empty() || res.ppl < mlpGroups[best].ppl) best = g;
    auto stackName = [](const std::string& g) {
      return g == "enc"   ? std::string("the encoder only")
             : g == "dec" ? std::string("the decoder only")
                          : std::string("both stacks");
    };
    const double densePpl = ref.value("perplexity", 0.0);
    std::string text = "With the mlp router at " + pct(run.exportFraction, 0) + " of the experts, MoE in " +
                       stackName(best) + " costs the least: target perplexity " + fmt(mlpGroups[best].ppl, 2) +
                       " against " + fmt(densePpl, 2) + " dense, top-1 agreement " + fmt(mlpGroups[best].top1, 3) + ".";
    for (const auto& [g, res] : mlpGroups)
      if (g != best) text += " In " + stackName(g) + ": " + fmt(res.ppl, 2) + " (top-1 " + fmt(res.top1, 3) + ").";
    if (!bleuIsNoise && mlpGroups.count("both"))
      text += " BLEU in both stacks: " + fmt(mlpGroups["both"].bleu, 2) + " against " + fmt(denseBleu, 2) + ".";
    rep.paragraph(text);
    // The FFNs' share of a decoder step's multiply-adds (per token, KV cache): self-attention q, k, v, o and
    // cross-attention q, o (its k, v are computed once per source), the FFN, and the vocabulary projection.
    const json cfg = readJsonFile(run.model / "config.json");
    const double dm = cfg.value("d_model", 0.0), dff = cfg.value("d_ff", 0.0), vocab = cfg.value("vocab_size", 0.0);
    const double inner = cfg.value("num_heads", 0.0) * cfg.value("d_kv", 0.0);
    const double layers = cfg.value("num_decoder_layers", cfg.value("num_layers", 0.0));
    const double ffn = layers * 2 * dm * dff, step = ffn + layers * 6 * dm * inner + dm * vocab;
    const double ffnShare = step > 0 ? ffn / step : 0;
    const double bound = 1.0 / (1.0 - ffnShare + ffnShare * run.exportFraction);
    std::string speed = "Speed: the decoder's FFNs are " + pct(ffnShare, 0) +
                        " of a decoding step's multiply-adds here (the " + fmt(vocab, 0) +
                        "-word output projection alone is " + pct(dm * vocab / std::max(step, 1.0), 0) +
                        "), so even a free router at " + pct(run.exportFraction, 0) +
                        " of the experts bounds the decoding speed-up near " + fmt(bound, 2) + "x.";
    if (mlpGroups.count("both")) {
      const double sp = mlpGroups["both"].speedup;
      speed += " Measured with the mlp router in both stacks: " + fmt(sp, 2) + "x per token";
      if (sp > bound * 1.1)
        speed += ", above that bound, so this run's timings are too noisy to read (time again on a quiet machine).";
      else if (sp < 1.05)
        speed += ": no measurable gain; computing fewer FFN neurons saves little wall time at this model size.";
      else
        speed += ".";
    }
    rep.paragraph(speed);
  }

  // Question 2: how many experts.
  Chart bleuChart;
  bleuChart.title = "BLEU against the active-expert fraction";
  bleuChart.xLabel = "fraction of experts active";
  bleuChart.yLabel = "test BLEU";
  bleuChart.yMin = 0;
  Chart pplChart;
  pplChart.title = "Target perplexity against the active-expert fraction";
  pplChart.xLabel = "fraction of experts active";
  pplChart.yLabel = "test target perplexity (teacher-forced)";
  pplChart.logY = true;
  std::vector<std::vector<std::string>> q2Rows;
  auto addSweep = [&](const json& e, const std::string& router, const std::string& group, const std::string& label) {
    Series s{label, {}, {}}, p{label, {}, {}};
    for (double f : run.sweep)
      if (const json* x = resultOf(e, router, group, f)) {
        s.x.push_back(f);
        s.y.push_back(gen(*x, "bleu"));
        p.x.push_back(f);
        p.y.push_back(x->value("perplexity", 0.0));
        q2Rows.push_back(
            {label, fmt(f, 3), fmt(x->value("ffn_flops_fraction", 0.0), 3), fmt(gen(*x, "bleu"), 2),
             fmt(gen(*x, "chrf"), 2), fmt(x->value("perplexity", 0.0), 2),
             router == "oracle" ? std::string("-") : fmt(allExpertsMsTok(e, router, group) / msPerToken(*x), 2)});
      }
    if (!s.x.empty()) bleuChart.series.push_back(s);
    if (!p.x.empty()) pplChart.series.push_back(p);
  };
  for (const auto& r : kRouters) addSweep(ev, r, "both", "coact + " + r);
  for (const auto& m : {"kmeans", "random"})
    addSweep(readEvalFile(dir / "eval" / m / "eval.json"), "mlp", "both", std::string(m) + " + mlp");
  if (!run.sweep.empty()) {
    bleuChart.series.push_back(Series{"dense", {run.sweep.front(), 1.0}, {denseBleu, denseBleu}});
    const double densePpl = ref.value("perplexity", 0.0);
    pplChart.series.push_back(Series{"dense", {run.sweep.front(), 1.0}, {densePpl, densePpl}});
  }
  rep.heading("How many experts");
  rep.paragraph(
      "MoE in both stacks; every split with the mlp router, and the coact split with each router. Columns "
      "as above (speed-up against the same split and router with every expert active).");
  rep.table({"split + router", "fraction", "FFN FLOPs", "BLEU", "chrF", "target ppl", "speed-up"}, q2Rows);
  rep.figure("bleu_vs_fraction", bleuChart,
             "Test BLEU (sacreBLEU defaults) against the fraction of experts computed per token, encoder and decoder "
             "MoEfied. Data: " +
                 describeData(evalDataSelection(ev, dir / "eval" / "coact"), true) + ".");

  rep.figure("ppl_vs_fraction", pplChart,
             "Test target perplexity (teacher-forced, the same pairs) against the fraction of experts computed per "
             "token, encoder and decoder MoEfied (log scale).");

  // Time against sentence length, dense vs MoE (coact + mlp, both stacks).
  Chart timeChart;
  timeChart.title = "Decoding time against source length";
  timeChart.xLabel = "source length (tokens, bucket midpoint)";
  timeChart.yLabel = "ms per sentence";
  timeChart.yMin = 0;
  std::vector<std::vector<std::string>> timeRows;
  auto addBuckets = [&](const json& x, const std::string& label) {
    Series s{label, {}, {}};
    for (const auto& b : x["generation"]["buckets"]) {
      const double mid = 0.5 * (b.value("min_source_tokens", 0) + b.value("max_source_tokens", 0));
      s.x.push_back(mid);
      s.y.push_back(b.value("seconds_per_sentence", 0.0) * 1e3);
      timeRows.push_back(
          {label,
           std::to_string(b.value("min_source_tokens", 0)) + "-" + std::to_string(b.value("max_source_tokens", 0)),
           std::to_string(b.value("sentences", 0)), fmt(b.value("seconds_per_sentence", 0.0) * 1e3, 1),
           fmt(b.value("bleu", 0.0), 2)});
    }
    if (!s.x.empty()) timeChart.series.push_back(s);
  };
  addBuckets(ref, "dense");
  for (double f : run.sweep)
    if (f < 1.0)
      if (const json* x = resultOf(ev, "mlp", "both", f)) addBuckets(*x, "MoE " + pct(f, 1));
  rep.heading("Decoding time by sentence length");
  rep.table({"model", "source tokens", "sentences", "ms/sentence", "BLEU"}, timeRows);
  rep.figure("time_vs_length", timeChart,
             "Greedy decoding time per sentence in source-length buckets (quartiles of the test sources), dense vs "
             "the coact + mlp MoE in both stacks. The time per sentence includes the translation's length (a MoE that "
             "stops earlier is faster for that reason too; the tables give the time per generated token). Wall time on "
             "a shared machine: compare the curves, not the values.");

  // Export and reload.
  rep.heading("Export and reload");
  const json evx = readEvalFile(dir / "eval" / "export" / "eval.json");
  const json* inMemory = resultOf(ev, "mlp", "both", run.exportFraction);
  const json* reloaded = nullptr;
  for (const auto& r : evx["results"])
    if (r.contains("generation")) reloaded = &r;
  if (inMemory && reloaded) {
    const bool same = (*inMemory)["generation"]["bleu_detail"] == (*reloaded)["generation"]["bleu_detail"];
    rep.paragraph("The coact + mlp MoE at " + pct(run.exportFraction, 1) +
                  " of the experts was exported to export/ (a standard checkpoint plus moe.safetensors) and "
                  "evaluated again from disk: BLEU " +
                  fmt(gen(*reloaded, "bleu"), 2) + " against " + fmt(gen(*inMemory, "bleu"), 2) +
                  " in memory; the n-gram statistics of the two decodings are " +
                  (same ? "identical." : "NOT identical: the exported model decodes differently (a bug to report)."));
  } else {
    rep.paragraph("The export's evaluation has no translation results to compare.");
  }

  stageTimesSection(rep, stageTimes);
  rep.write();
}

}  // namespace

int runTranslationDemo(const Args& a) {
  const fs::path data = dataDir();
  TranslationRun run;
  run.model = a.text("model").empty() ? data / "models" / "bible-t5" : fs::path(a.text("model"));
  run.trainCorpus =
      a.text("corpus").empty() ? data / "corpus" / "bible-en-es" / "train.tsv" : fs::path(a.text("corpus"));
  run.evalCorpus =
      a.text("eval-corpus").empty() ? data / "corpus" / "bible-en-es" / "test.tsv" : fs::path(a.text("eval-corpus"));
  const fs::path out = a.has("out") ? fs::path(a.text("out")) : fs::path("moefy-demo-translation");
  run.seed = std::to_string(a.seed("seed"));
  const bool quick = a.flag("quick");
  run.experts = static_cast<int>(a.integer("experts"));
  if (run.experts < 4)
    throw ParameterError("--experts: the translation demo needs at least 4 experts (got " +
                         std::to_string(run.experts) + ")");
  // Recorded tokens (source + target), and evaluation target tokens (about 30 per test sentence).
  const std::string recordTokens = std::to_string(a.has("tokens") ? a.integer("tokens") : quick ? 2048 : 16384);
  const std::string evalTokens = std::to_string(a.has("eval-tokens") ? a.integer("eval-tokens") : quick ? 400 : 3000);
  const std::string experts = std::to_string(run.experts);
  const std::string samples = quick ? "1024" : "8192";
  const std::string epochs = quick ? "3" : "20";
  run.sweep = quick ? std::vector<double>{0.25, 1.0} : std::vector<double>{0.125, 0.25, 0.5, 1.0};
  std::string sweep;
  for (double f : run.sweep) sweep += (sweep.empty() ? "" : ",") + fmt(f, 3);
  for (const auto& p : {run.model, run.trainCorpus, run.evalCorpus})
    if (!fs::exists(p))
      throw IoError(p.string() + ": not found (the bundled translation demo data; set --model/--corpus/--eval-corpus)");
  const std::string mt = readJsonFile(run.model / "config.json").value("model_type", "");
  if (mt != "t5")
    throw ParameterError("--model: " + run.model.string() + " is a '" + mt +
                         "' model; --translation needs an encoder-decoder (T5) model");

  const auto t0 = std::chrono::steady_clock::now();
  Stages stages(8);
  const std::string model = run.model.string(), evalCorpus = run.evalCorpus.string();
  // The test pairs, translated greedily (at most 96 new tokens), 16 sentences per padded batch.
  auto evalArgs = [&](std::vector<std::string> extra, const fs::path& outDir) {
    std::vector<std::string> args = {model, evalCorpus};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--generate", "96", "--batch", "16", "--tokens", evalTokens, "--split", "all", "--seed",
                             run.seed, "--out", outDir.string()});
    return args;
  };
  writeFolderAtomic(out, a.flag("force"), [&](const fs::path& dir) {
    stages.setDir(dir);
    const std::string rec = (dir / "recording").string();
    stages.stage("record", [&] {
      Stages::run("record", {model, run.trainCorpus.string(), "--out", rec, "--tokens", recordTokens, "--seq-len", "64",
                             "--samples", samples, "--seed", run.seed});
    });
    stages.stage("split", [&] {
      for (const auto& m : kMethods)
        Stages::run("split", {rec, "--method", m, "--experts", experts, "--seed", run.seed, "--out",
                              (dir / "partitions" / m).string()});
    });
    stages.stage("route", [&] {
      for (const auto& r : kRouters)
        Stages::run("route", {model, rec, (dir / "partitions" / "coact").string(), "--router", r, "--seed", run.seed,
                              "--epochs", epochs, "--out", (dir / "routers" / ("coact-" + r)).string()});
      for (const auto& m : {"kmeans", "random"})
        Stages::run("route", {model, rec, (dir / "partitions" / m).string(), "--router", "mlp", "--seed", run.seed,
                              "--epochs", epochs, "--out", (dir / "routers" / (std::string(m) + "-mlp")).string()});
    });
    // Questions 1 and 2 on the coact split: every router, site group and fraction.
    stages.stage("eval", [&] {
      std::vector<std::string> extra = {"--partition", (dir / "partitions" / "coact").string()};
      for (const auto& r : kRouters)
        extra.insert(extra.end(), {"--router", (dir / "routers" / ("coact-" + r)).string()});
      extra.insert(extra.end(), {"--sweep", sweep});
      Stages::run("eval", evalArgs(extra, dir / "eval" / "coact"));
    });
    stages.stage("eval-split", [&] {
      for (const auto& m : {"kmeans", "random"})
        Stages::run("eval", evalArgs({"--partition", (dir / "partitions" / m).string(), "--router",
                                      (dir / "routers" / (std::string(m) + "-mlp")).string(), "--sweep", sweep},
                                     dir / "eval" / m));
    });
    const std::string topK =
        std::to_string(std::max(1, static_cast<int>(std::lround(run.experts * run.exportFraction))));
    stages.stage("export", [&] {
      Stages::run("export", {model, (dir / "partitions" / "coact").string(), (dir / "routers" / "coact-mlp").string(),
                             "--top-k", topK, "--out", (dir / "export").string()});
    });
    stages.stage("reload", [&] {
      Stages::run("eval", evalArgs({"--moe", (dir / "export").string()}, dir / "eval" / "export"));
    });
    stages.stage("report", [&] { writeTranslationReport(dir, run, stages.times()); });
    Workspace ws = Workspace::create(dir, "MoEfy translation demo", fs::absolute(run.model).lexically_normal().string(),
                                     fs::absolute(run.trainCorpus).lexically_normal().string());
    ws.folders["recordings"] = "recording";
    ws.folders["evaluations"] = "eval";
    ws.folders["exports"] = "export";
    ws.evalCorpusPath = fs::absolute(run.evalCorpus).lexically_normal().string();
    ws.save();
  });
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.json()) {
    printJson({{"out", out.string()}, {"seconds", total}, {"report", (out / "report.html").string()}});
  } else {
    std::cout << "translation demo finished in " << fmt(total, 1) << " s: " << (out / "report.html").string() << "\n";
  }
  return 0;
}

}  // namespace moefy::cli::demo
