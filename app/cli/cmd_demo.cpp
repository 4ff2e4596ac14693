// moefy demo: the whole MoEfication pipeline on the bundled model and corpus,
// headless, ending in report.md / report.html with figures. Every stage runs
// the same subcommand a user would type (runSubcommand), so the demo is also
// an end-to-end check of the CLI; each stage's own output goes to logs/.
#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/eval/eval_data.h"
#include "analysis/eval/eval_file.h"
#include "analysis/eval/front.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/moe/layer_budget.h"
#include "analysis/moe/moe_export.h"
#include "analysis/project/project.h"
#include "analysis/record/recording.h"
#include "analysis/record/sparsity.h"
#include "analysis/report/report.h"
#include "analysis/route/router.h"
#include "app/cli/cli.h"
#include "app/cli/demo.h"

namespace moefy::cli {

namespace demo {

namespace fs = std::filesystem;

fs::path dataDir() {
  if (const char* env = std::getenv("MOEFY_DATA_DIR")) return env;
  return fs::path(MOEFY_SOURCE_DIR) / "data";
}

std::string fmt(double v, int digits) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

namespace {

// Sends stdout (the subcommand's own summary) to a log file while a stage runs.
class StdoutToFile {
 public:
  explicit StdoutToFile(const fs::path& path) {
    std::cout.flush();
    std::fflush(stdout);
    saved_ = dup(STDOUT_FILENO);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) throw IoError(path.string() + ": cannot write log");
    dup2(fd, STDOUT_FILENO);
    ::close(fd);
  }
  ~StdoutToFile() {
    std::cout.flush();
    std::fflush(stdout);
    dup2(saved_, STDOUT_FILENO);
    ::close(saved_);
  }

 private:
  int saved_ = -1;
};

}  // namespace

void Stages::setDir(const fs::path& dir) {
  dir_ = dir;
  fs::create_directories(dir_ / "logs");
}

void Stages::stage(const std::string& name, const std::function<void()>& fn) {
  ++done_;
  std::fprintf(stderr, "[demo %d/%d] %-10s ...\n", done_, count_, name.c_str());
  auto s = std::chrono::steady_clock::now();
  {
    StdoutToFile redirect(dir_ / "logs" / (name + ".log"));
    fn();
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
  times_.emplace_back(name, secs);
  std::fprintf(stderr, "[demo %d/%d] %-10s done in %.1f s\n", done_, count_, name.c_str(), secs);
}

void Stages::run(const std::string& cmd, std::vector<std::string> args) {
  args.push_back("--quiet");
  int rc = runSubcommand(cmd, args);
  if (rc != 0) throw Error("demo: stage '" + cmd + "' failed (exit " + std::to_string(rc) + ")");
}

void stageTimesSection(report::Report& rep, const std::vector<std::pair<std::string, double>>& times) {
  std::vector<std::vector<std::string>> rows;
  double total = 0;
  for (const auto& [name, secs] : times) rows.push_back({name, fmt(secs, 1) + " s"}), total += secs;
  rep.heading("Run");
  rep.table({"stage", "wall time"}, rows);
  rep.paragraph("Total before the report: " + fmt(total, 1) + " s. Logs of every stage are in logs/.");
}

}  // namespace demo

namespace {

namespace fs = std::filesystem;
using demo::dataDir;
using demo::fmt;
using nlohmann::json;

json readJson(const fs::path& p) { return readJsonFile(p); }

double meanOver(const json& perLayer, const std::function<double(const json&)>& f) {
  double s = 0;
  int n = 0;
  for (auto it = perLayer.begin(); it != perLayer.end(); ++it) s += f(it.value()), ++n;
  return n ? s / n : std::nan("");
}

const json* findResult(const json& eval, const std::string& router, double fraction) {
  for (const auto& r : eval["results"])
    if (r.value("router", "") == router && std::abs(r.value("fraction", -1.0) - fraction) < 1e-9) return &r;
  return nullptr;
}

// What the export stage exported: the best method of the front at 25 % of
// the dense FFN FLOPs (plain MoEfication with the coact split and the mlp
// router when the front names none there).
struct DemoExport {
  std::string method;  ///< front method name, or "coact + mlp"
  fs::path partition, router;
  int topK = 0;         ///< 0: the router's own per-layer top-k (the per-layer method)
  fs::path evalJson;    ///< the in-memory evaluation of the same MoE at the same top-k
  double fraction = 0;  ///< its k/E in that evaluation
  std::string why;      ///< one sentence for the report
};

/// The quality-at-a-budget section: the front's table and figures, and the
/// gain of the best method over plain MoEfication at each budget.
void frontSection(report::Report& rep, const FrontResult& front) {
  auto pct = [](double b) { return fmt(b * 100, 1) + " %"; };
  rep.heading("Quality at a compute budget");
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : front.methods)
    for (double b : front.budgets) {
      const FrontPoint* p = FrontResult::pointAt(m, b);
      if (!p) {
        rows.push_back({m.name, pct(b), "-", "-", "-", "no operating point within the budget", "-"});
        continue;
      }
      rows.push_back({m.name, pct(b), fmt(p->ffnFlopsFraction * 100, 1) + " %", fmt(p->fraction, 3),
                      m.name == "bound" ? "-" : fmt(p->meanK, 2), fmt(p->perplexity, 2), fmt(p->top1Agreement)});
    }
  std::string text =
      "Every method at the same FFN FLOP budgets (router and shared expert included), on the same "
      "held-out tokens; dense perplexity " +
      fmt(front.densePerplexity, 2) + ". ";
  for (const auto& b : front.best) {
    if (b.method.empty()) {
      text += "At " + pct(b.budget) + " no method has an operating point. ";
    } else if (b.plainPerplexity > 0) {
      const double gain = (1 - b.perplexity / b.plainPerplexity) * 100;
      text +=
          "At " + pct(b.budget) + " the best method is " + b.method + " (perplexity " + fmt(b.perplexity, 2) + "), " +
          (b.method == "plain" ? std::string("plain MoEfication itself")
                               : fmt(gain, 1) + " % lower than plain MoEfication (" + fmt(b.plainPerplexity, 2) + ")") +
          ". ";
    } else {
      text += "At " + pct(b.budget) + " the best method is " + b.method + " (perplexity " + fmt(b.perplexity, 2) +
              "); plain MoEfication has no operating point within this budget. ";
    }
  }
  rep.paragraph(text +
                "The top-k activation bound keeps each budget's share of neurons per token by |h|; it needs "
                "the dense hidden, so it is a reference, drawn at its neuron budget.");
  rep.table({"method", "budget", "FFN FLOPs", "k/E", "mean k", "perplexity", "top-1 agreement"}, rows);
  const std::vector<report::Chart> charts = frontCharts(front);
  rep.figure("front_perplexity", charts[0], "Held-out perplexity against FFN FLOPs per token, one curve per method.");
  rep.figure("front_top1", charts[1], "Top-1 agreement with the dense model against FFN FLOPs per token.");
}

void writeDemoReport(const fs::path& dir, const fs::path& model, const fs::path& trainCorpus,
                     const fs::path& evalCorpus, const std::string& seed, const std::vector<std::string>& methods,
                     const std::vector<std::string>& routers, int experts, const DemoExport& exported,
                     const std::vector<std::pair<std::string, double>>& stageTimes) {
  using namespace moefy::report;
  Report rep(dir, "MoEfication demo: ReLU GPT-2 on the Brown corpus");
  const json manifest = readJson(dir / "recording" / "manifest.json");
  const int64_t tokens = manifest.value("tokens", int64_t{0});
  const int dFF = manifest["model"].value("d_ff", 0);
  rep.paragraph("Model " + model.string() + " (fingerprint " + manifest["model"].value("fingerprint", "") +
                "), recorded on " + std::to_string(tokens) + " tokens of " + trainCorpus.string() +
                ", evaluated on " + evalCorpus.string() + ". Seed " + seed + ", " + std::to_string(experts) +
                " experts of " + std::to_string(dFF / experts) + " neurons per layer. Tool version " MOEFY_VERSION ".");

  // Sparsity per layer: the core's summary (analysis/record/sparsity.h), the
  // same figures the studio's Sparsity view shows.
  const Recording recording = Recording::open(dir / "recording");
  const std::vector<int>& layers = recording.layers();
  Chart sparsity;
  sparsity.kind = Chart::Kind::Bar;
  sparsity.title = "Active FFN neurons per token";
  sparsity.xLabel = "layer";
  sparsity.yLabel = "active neurons (% of d_ff)";
  Series meanS{"mean", {}, {}}, deadS{"dead neurons", {}, {}};
  std::vector<std::vector<std::string>> sparsityRows;
  for (int L : layers) {
    const LayerSparsity s = layerSparsity(recording, L);
    const double mean = s.meanActiveShare * 100, sd = s.sdActiveShare * 100;
    const double dead = static_cast<double>(s.dead) / s.dFF * 100;
    sparsity.categories.push_back(std::to_string(L));
    meanS.y.push_back(mean);
    deadS.y.push_back(dead);
    sparsityRows.push_back({std::to_string(L), fmt(mean, 1) + " %", fmt(sd, 1) + " %", fmt(dead, 1) + " %"});
  }
  sparsity.series = {meanS, deadS};
  double meanActive = 0;
  for (double v : meanS.y) meanActive += v;
  meanActive /= std::max<size_t>(1, meanS.y.size());
  rep.heading("Activation sparsity");
  rep.paragraph("On average " + fmt(meanActive, 1) + " % of the FFN neurons are active (h > 0) on a token. " +
                (meanActive < 30 ? "The ReLU FFNs are sparse, which is what MoEfication relies on."
                                 : "The FFNs are not very sparse; expect a larger quality loss at small active fractions."));
  rep.table({"layer", "mean active", "spread (sd)", "dead neurons"}, sparsityRows);
  rep.figure("sparsity", sparsity, "Share of FFN neurons active per token, and never-active neurons, per layer.");

  // Partitions: recall@k and co-activation inside experts.
  Chart recall;
  recall.title = "Oracle recall@k by split method";
  recall.xLabel = "experts selected per token (k)";
  recall.yLabel = "share of activation mass";
  recall.yMin = 0;
  recall.yMax = 1;
  std::map<std::string, double> recallAtQuarter, stability;
  std::vector<std::vector<std::string>> partRows;
  const int kq = std::max(1, experts / 4);
  for (const auto& m : methods) {
    json pj = readJson(dir / "partitions" / m / "partition.json");
    const json& metrics = pj["metrics"];
    Series s{m, {}, {}};
    for (int k = 1; k <= experts; ++k) {
      s.x.push_back(k);
      s.y.push_back(meanOver(metrics, [&](const json& l) { return l["recall_at_k"].at(k - 1).get<double>(); }));
    }
    recallAtQuarter[m] = s.y[kq - 1];
    stability[m] = meanOver(metrics, [](const json& l) { return l.value("stability_ari", std::nan("")); });
    recall.series.push_back(s);
    partRows.push_back({m, fmt(recallAtQuarter[m]), fmt(meanOver(metrics, [](const json& l) { return l.value("coact_inside", 0.0); })),
                        fmt(stability[m])});
  }
  rep.heading("Expert construction");
  rep.table({"method", "recall@" + std::to_string(kq), "co-activation inside experts", "stability (ARI, seed vs seed+1)"},
            partRows);
  const double rc = recallAtQuarter["coact"], rk = recallAtQuarter["kmeans"], rr = recallAtQuarter["random"];
  std::string verdict;
  if (rc > rr + 0.02 || rk > rr + 0.02)
    verdict = "Structured splits beat random here: with " + std::to_string(kq) + " of " + std::to_string(experts) +
              " experts the best k experts hold " + fmt(std::max(rc, rk)) + " of a token's activation mass (" +
              (rc >= rk ? "coact" : "kmeans") + ") against " + fmt(rr) + " for a random split, as the MoEfication paper reports.";
  else
    verdict = "Structured splits do NOT beat random clearly here: recall@" + std::to_string(kq) + " is " + fmt(rc) +
              " (coact), " + fmt(rk) + " (kmeans) and " + fmt(rr) +
              " (random). This disagrees with the MoEfication paper; with a small model trained briefly the neurons "
              "may not have formed functional groups yet.";
  rep.paragraph(verdict);
  const double sc = stability["coact"], sk = stability["kmeans"];
  if (std::isfinite(sc) && std::isfinite(sk)) {
    if (std::max(sc, sk) < 0.8)
      rep.paragraph("The splits are not unique: rerun with the next seed, coact agrees with itself at ARI " + fmt(sc) +
                    " and kmeans at " + fmt(sk) + " (1 = the same split). Many "
                    "partitions are about equally good, so the identity of a single expert should not be read as a "
                    "property of the model.");
    else
      rep.paragraph("The splits are stable: rerun with the next seed, coact agrees with itself at ARI " + fmt(sc) +
                    " and kmeans at " + fmt(sk) + " (1 = the same split).");
  }
  rep.figure("recall_at_k", recall, "Oracle recall@k (mean over layers): share of a token's activation mass in its best k experts.");

  // Routers.
  std::vector<std::vector<std::string>> routerRows;
  for (const auto& r : routers) {
    json rj = readJson(dir / "routers" / ("coact-" + r) / "router.json");
    routerRows.push_back({r, fmt(meanOver(rj["metrics"], [](const json& l) { return l.value("mass_recall", 0.0); })),
                          fmt(meanOver(rj["metrics"], [](const json& l) { return l.value("overlap", 0.0); }))});
  }
  rep.heading("Routers (coact split)");
  rep.table({"router", "oracle mass captured", "top-k overlap with oracle"}, routerRows);

  // Quality over the active-fraction sweep.
  const json evalCoact = readEvalFile(dir / "eval" / "coact" / "eval.json");
  const double densePpl = evalCoact["reference"].value("perplexity", 0.0);
  Chart quality;
  quality.title = "Quality against the active-expert fraction";
  quality.xLabel = "fraction of experts active";
  quality.yLabel = "held-out perplexity";
  std::vector<std::vector<std::string>> qualityRows;
  auto addQuality = [&](const json& ev, const std::string& router, const std::string& label) {
    Series s{label, {}, {}};
    for (const auto& r : ev["results"]) {
      if (r.value("router", "") != router) continue;
      s.x.push_back(r["fraction"].get<double>());
      s.y.push_back(r["perplexity"].get<double>());
      qualityRows.push_back({label, fmt(r["fraction"].get<double>(), 3), fmt(r["perplexity"].get<double>(), 2),
                             fmt(r.value("top1_agreement", 0.0)), fmt(std::max(0.0, r.value("kl", 0.0)), 4)});
    }
    if (!s.x.empty()) quality.series.push_back(s);
  };
  for (const auto& r : routers) addQuality(evalCoact, r, "coact + " + r);
  for (const auto& m : {"kmeans", "random"})
    addQuality(readEvalFile(dir / "eval" / m / "eval.json"), "mlp", std::string(m) + " + mlp");
  if (!quality.series.empty()) {
    Series dense{"dense", {quality.series[0].x.front(), 1.0}, {densePpl, densePpl}};
    quality.series.push_back(dense);
  }
  rep.heading("Quality");
  std::string q = "Dense held-out perplexity: " + fmt(densePpl, 2) + ". ";
  if (const json* r = findResult(evalCoact, "mlp", 0.25))
    q += "With 25 % of the experts, the MLP router on the coact split gives perplexity " + fmt((*r)["perplexity"].get<double>(), 2) +
         " (" + fmt(((*r)["perplexity"].get<double>() / densePpl - 1) * 100, 1) + " % above dense) and agrees with the dense model's top-1 next token on " +
         fmt((*r).value("top1_agreement", 0.0) * 100, 1) + " % of positions.";
  if (const json* o = findResult(evalCoact, "oracle", 0.25))
    q += " The oracle (top-k by activation mass) at the same budget reaches " + fmt((*o)["perplexity"].get<double>(), 2) +
         "; it maximises the recalled activation mass, which is not the same as the output quality, so a learned or "
         "similarity router can beat it on perplexity.";
  rep.paragraph(q);
  rep.table({"split + router", "fraction", "perplexity", "top-1 agreement", "KL(dense, MoE)"}, qualityRows);
  // Which data the figure is on: the same caption as the studio's Evaluation view.
  rep.figure("quality", quality,
             "Held-out perplexity against the fraction of experts computed per token. Data: " +
                 describeData(evalDataSelection(evalCoact, dir / "eval" / "coact"), true) + ".");

  frontSection(rep, readFront(dir / "front"));
  // Per-layer budget: the allocation the router stores (analysis/moe/layer_budget.h) and what eval measured.
  {
    const RouterSet budgeted = RouterSet::read(dir / "routers" / "coact-mlp-budget");
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;
    allocationTable(budgeted, header, rows);
    const json evalBudget = readEvalFile(dir / "eval" / "budget" / "eval.json");
    rep.heading("Per-layer budget");
    std::string b =
        "The coact split with an mlp router at 25 % of the dense FFN FLOPs (router included), the experts "
        "shared out over the layers by their recorded activity (one more expert at a time to the layer "
        "with the most active neurons per token per expert it has; docs/moe.md, \"Per-layer budgets\"). "
        "Planned FFN FLOP fraction " +
        fmt(budgeted.allocation.value("flops_fraction", 0.0), 4) + ".";
    if (!evalBudget["results"].empty()) {
      const json& r = evalBudget["results"][0];
      b += " Measured by eval: " + fmt(r.value("ffn_flops_fraction", 0.0), 4) + " of the dense FFN FLOPs, perplexity " +
           fmt(r.value("perplexity", 0.0), 2) + " (dense " + fmt(densePpl, 2) + ").";
      if (const json* u = findResult(evalCoact, "mlp", 0.25))
        b += " The same router kind with k = E / 4 in every layer: perplexity " +
             fmt((*u)["perplexity"].get<double>(), 2) + " at " + fmt(u->value("ffn_flops_fraction", 0.0), 4) +
             " of the FLOPs.";
    }
    rep.paragraph(b);
    if (!rows.empty()) rep.table(header, rows);
  }

  // Speed.
  Chart speed;
  speed.kind = Chart::Kind::Bar;
  speed.title = "MoE speed-up over dense (mlp router, coact split)";
  speed.xLabel = "fraction of experts active";
  speed.yLabel = "speed-up (x)";
  Series fwd{"forward (batch)", {}, {}}, gen{"greedy generation", {}, {}};
  std::vector<std::vector<std::string>> speedRows;
  for (const auto& r : evalCoact["results"]) {
    if (r.value("router", "") != "mlp" || !r.contains("speed")) continue;
    const json& sp = r["speed"];
    speed.categories.push_back(fmt(r["fraction"].get<double>(), 3));
    fwd.y.push_back(sp.value("forward_speedup", 0.0));
    gen.y.push_back(sp.value("generate_speedup", 0.0));
    speedRows.push_back({fmt(r["fraction"].get<double>(), 3), fmt(sp.value("dense_forward_tokens_per_s", 0.0), 0),
                         fmt(sp.value("forward_tokens_per_s", 0.0), 0), fmt(sp.value("forward_speedup", 0.0), 2) + "x",
                         fmt(sp.value("generate_speedup", 0.0), 2) + "x"});
  }
  speed.series = {fwd, gen};
  rep.heading("Speed");
  rep.paragraph("Tokens per second of the whole model, dense against MoE (router cost included), measured in the same run. "
                "Timings vary between runs and machines; the quality figures do not.");
  rep.table({"fraction", "dense forward tok/s", "MoE forward tok/s", "forward speed-up", "generation speed-up"}, speedRows);
  if (!speed.categories.empty()) rep.figure("speed", speed, "Speed-up of the MoEfied model over the dense model.");

  // Export and reload.
  rep.heading("Export and reload");
  const json evalExport = readEvalFile(dir / "eval" / "export" / "eval.json");
  const json inMemoryEval = readEvalFile(exported.evalJson);
  const json* inMemory = nullptr;
  for (const auto& r : inMemoryEval["results"])
    if (r.value("fraction", -1.0) == exported.fraction) inMemory = &r;
  if (!evalExport["results"].empty() && inMemory) {
    const json& r = evalExport["results"][0];
    double a = r["loss"].get<double>(), b = (*inMemory)["loss"].get<double>();
    const std::string k =
        exported.topK > 0 ? "top-k " + std::to_string(exported.topK) : "each layer at its allocated top-k";
    rep.paragraph(exported.why + " It was exported to export/ (" + k + ") and reloaded with the same loader: loss " +
                  fmt(a, 6) + " against " + fmt(b, 6) + " in memory (" +
                  (a == b ? std::string("identical") : "difference " + fmt(std::abs(a - b), 9)) + ").");
  }
  demo::stageTimesSection(rep, stageTimes);
  rep.write();
}

int runDemo(const Args& a) {
  if (a.flag("translation")) return demo::runTranslationDemo(a);
  const fs::path data = dataDir();
  const fs::path model = a.text("model").empty() ? data / "models" / "brown-relu" : fs::path(a.text("model"));
  const fs::path trainCorpus =
      a.text("corpus").empty() ? data / "corpus" / "brown" / "train" : fs::path(a.text("corpus"));
  const fs::path evalCorpus =
      a.text("eval-corpus").empty() ? data / "corpus" / "brown" / "heldout" : fs::path(a.text("eval-corpus"));
  const fs::path out = a.text("out");
  const std::string seed = std::to_string(a.seed("seed"));
  const bool quick = a.flag("quick");
  const std::string recordTokens = std::to_string(a.has("tokens") ? a.integer("tokens") : quick ? 4096 : 32768);
  const std::string evalTokens = std::to_string(a.has("eval-tokens") ? a.integer("eval-tokens") : quick ? 1024 : 4096);
  const std::string experts = std::to_string(a.integer("experts"));
  const std::string samples = quick ? "2048" : "8192";
  const std::string epochs = quick ? "5" : "30";
  for (const auto& p : {model, trainCorpus, evalCorpus})
    if (!fs::exists(p)) throw IoError(p.string() + ": not found (the bundled demo data; set --model/--corpus/--eval-corpus)");

  const auto t0 = std::chrono::steady_clock::now();
  demo::Stages stages(8);
  fs::path dir;  // the temporary folder being built
  auto stage = [&](const std::string& name, const std::function<void()>& fn) { stages.stage(name, fn); };
  auto run = [](const std::string& cmd, const std::vector<std::string>& args) { demo::Stages::run(cmd, args); };
  const std::vector<std::string> methods = {"coact", "kmeans", "random"};
  const std::vector<std::string> routers = {"oracle", "similarity", "mlp"};
  const std::string sweep = "0.125,0.25,0.5,1.0";

  writeFolderAtomic(out, a.flag("force"), [&](const fs::path& tmp) {
    dir = tmp;
    stages.setDir(dir);
    const std::string rec = (dir / "recording").string();
    stage("record", [&] {
      run("record", {model.string(), trainCorpus.string(), "--out", rec, "--tokens", recordTokens, "--seq-len", "128",
                     "--samples", samples, "--seed", seed, "--shuffle"});
    });
    stage("split", [&] {
      for (const auto& m : methods)
        run("split", {rec, "--method", m, "--experts", experts, "--seed", seed, "--out",
                      (dir / "partitions" / m).string()});
    });
    stage("route", [&] {
      for (const auto& r : routers)
        run("route", {model.string(), rec, (dir / "partitions" / "coact").string(), "--router", r, "--seed", seed,
                      "--epochs", epochs, "--out", (dir / "routers" / ("coact-" + r)).string()});
      for (const auto& m : {"kmeans", "random"})
        run("route", {model.string(), rec, (dir / "partitions" / m).string(), "--router", "mlp", "--seed", seed,
                      "--epochs", epochs, "--out", (dir / "routers" / (std::string(m) + "-mlp")).string()});
      // Per-layer budget (issue 17): 25 % of the dense FFN FLOPs shared out by recorded activity.
      run("route", {model.string(), rec, (dir / "partitions" / "coact").string(), "--router", "mlp", "--seed", seed,
                    "--epochs", epochs, "--budget", "0.25", "--allocate", "activity", "--out",
                    (dir / "routers" / "coact-mlp-budget").string()});
    });
    stage("eval", [&] {
      std::vector<std::string> args = {model.string(), evalCorpus.string(), "--partition",
                                       (dir / "partitions" / "coact").string()};
      for (const auto& r : routers) args.insert(args.end(), {"--router", (dir / "routers" / ("coact-" + r)).string()});
      args.insert(args.end(), {"--sweep", sweep, "--tokens", evalTokens, "--seq-len", "128", "--split", "all",
                               "--seed", seed, "--out", (dir / "eval" / "coact").string()});
      // Timing is the slow part of the sweep; --quick (the tests) measures quality only.
      if (!quick) args.insert(args.end() - 2, "--speed");
      run("eval", args);
      for (const auto& m : {"kmeans", "random"})
        run("eval", {model.string(), evalCorpus.string(), "--partition", (dir / "partitions" / m).string(), "--router",
                     (dir / "routers" / (std::string(m) + "-mlp")).string(), "--sweep", sweep, "--tokens", evalTokens,
                     "--seq-len", "128", "--split", "all", "--seed", seed, "--out", (dir / "eval" / m).string()});
      // Each layer at its allocated k (no sweep): the FLOPs that ran.
      run("eval", {model.string(), evalCorpus.string(), "--partition", (dir / "partitions" / "coact").string(),
                   "--router", (dir / "routers" / "coact-mlp-budget").string(), "--tokens", evalTokens, "--seq-len",
                   "128", "--split", "all", "--seed", seed, "--out", (dir / "eval" / "budget").string()});
    });
    const int e = std::stoi(experts);
    // The front: every compute-budget method at 12.5, 25 and 50 % of the
    // dense FFN FLOPs (its own recording, with the demo's settings).
    stage("front", [&] {
      run("front", {model.string(),
                    trainCorpus.string(),
                    evalCorpus.string(),
                    "--out",
                    (dir / "front").string(),
                    "--budgets",
                    "0.125,0.25,0.5",
                    "--experts",
                    experts,
                    "--tokens",
                    recordTokens,
                    "--samples",
                    samples,
                    "--eval-tokens",
                    evalTokens,
                    "--seq-len",
                    "128",
                    "--split",
                    "all",
                    "--seed",
                    seed,
                    "--epochs",
                    epochs});
    });
    // The default export: the best method of the front at 25 %.
    DemoExport ex;
    {
      const FrontResult front = readFront(dir / "front");
      const FrontBest* best = nullptr;
      for (const auto& b : front.best)
        if (b.budget == 0.25 && !b.method.empty()) best = &b;
      if (best) {
        const FrontMethod& m = *front.method(best->method);
        const FrontPoint& p = *FrontResult::pointAt(m, 0.25);
        ex.method = m.name;
        ex.partition = dir / "front" / m.partition;
        // per-layer: the budget's own router, each layer at its allocated k.
        ex.router = dir / "front" / (p.routerDir.empty() ? m.routerDir : p.routerDir);
        ex.topK = p.routerDir.empty() ? static_cast<int>(std::lround(p.fraction * front.experts)) : 0;
        ex.evalJson = dir / "front" / m.eval / "eval.json";
        ex.fraction = p.fraction;
        ex.why = "The best method at 25 % of the dense FFN FLOPs, " + m.name + " (" + m.router +
                 " router, perplexity " + fmt(p.perplexity, 2) + "), is the default export.";
      } else {
        ex.method = "coact + mlp";
        ex.partition = dir / "partitions" / "coact";
        ex.router = dir / "routers" / "coact-mlp";
        ex.topK = std::max(1, e / 4);
        ex.evalJson = dir / "eval" / "coact" / "eval.json";
        ex.fraction = 0.25;
        ex.why =
            "No method of the front reaches 25 % of the dense FFN FLOPs, so the coact + mlp MoE at a quarter "
            "of the experts is the export.";
      }
    }
    stage("export", [&] {
      std::vector<std::string> args = {model.string(), ex.partition.string(), ex.router.string(), "--out",
                                       (dir / "export").string()};
      if (ex.topK > 0) args.insert(args.end() - 2, {"--top-k", std::to_string(ex.topK)});
      run("export", args);
    });
    stage("reload", [&] {
      run("eval", {model.string(), evalCorpus.string(), "--moe", (dir / "export").string(), "--tokens", evalTokens,
                   "--seq-len", "128", "--split", "all", "--seed", seed, "--out", (dir / "eval" / "export").string()});
    });
    stage("report",
          [&] { writeDemoReport(dir, model, trainCorpus, evalCorpus, seed, methods, routers, e, ex, stages.times()); });
    // The artefacts link each other relative to their own folders
    // (analysis/io/links.h), so the rename below keeps every link valid. The
    // folder is also a workspace the studio opens (File > Open workspace).
    Workspace ws = Workspace::create(dir, "MoEfy demo", fs::absolute(model).lexically_normal().string(),
                                     fs::absolute(trainCorpus).lexically_normal().string());
    ws.folders["recordings"] = "recording";
    ws.folders["evaluations"] = "eval";
    ws.folders["exports"] = "export";
    ws.folders["fronts"] = "front";  // the front is one artefact (its inner artefacts are its parts)
    ws.evalCorpusPath = fs::absolute(evalCorpus).lexically_normal().string();
    ws.save();
  });
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.json()) {
    printJson({{"out", out.string()}, {"seconds", total}, {"report", (out / "report.html").string()}});
  } else {
    std::cout << "demo finished in " << fmt(total, 1) << " s: " << (out / "report.html").string() << "\n";
  }
  return 0;
}

const OptionTable& demoOptionTable() {
  static const OptionTable table = [] {
    OptionTable t("demo", "run the whole pipeline on the bundled model and write a report",
                  "moefy demo [--translation] [--out DIR] [--seed S] [--force] [--quick] [--json]\n"
                  "                  [--model MODEL_DIR] [--corpus TRAIN_CORPUS] [--eval-corpus HELD_OUT_CORPUS]\n"
                  "                  [--tokens N] [--eval-tokens N] [--experts E]\n",
                  "On the bundled ReLU GPT-2 (data/models/brown-relu) and the Brown corpus (data/corpus/brown):\n"
                  "record all layers on the training split, split with coact, kmeans and random, build the\n"
                  "oracle, similarity and mlp routers, evaluate the active-fraction sweep on the held-out\n"
                  "documents (with dense vs MoE speed), run the front (moefy front: plain, per-layer budget,\n"
                  "shared expert, dynamic-k and the top-k activation bound at 12.5, 25 and 50 % of the dense FFN\n"
                  "FLOPs), export the best method at 25 % (coact+mlp when none reaches it), reload it and\n"
                  "evaluate it again.\n"
                  "Writes DIR atomically: the artefacts of every stage, logs/, figures/*.{png,pdf,svg},\n"
                  "report.md and report.html. The same seed gives the same numbers\n"
                  "(timings aside). --quick uses fewer tokens (for tests). MOEFY_DATA_DIR overrides data/.\n"
                  "--translation runs the translation study instead, on the bundled English -> Spanish T5\n"
                  "(data/models/bible-t5) and Bible corpus (data/corpus/bible-en-es: train.tsv, test.tsv): record\n"
                  "the encoder and decoder FFNs (decoder on teacher-forced targets), split (coact, kmeans,\n"
                  "random), build the routers, greedy-translate the test pairs with the dense model and MoE in\n"
                  "the encoder, the decoder and both over the active-fraction sweep (BLEU, chrF, decoding time\n"
                  "per source-length bucket), export the coact + mlp MoE at a quarter of the experts and check\n"
                  "that it decodes as in memory. Default DIR moefy-demo-translation; --tokens and --eval-tokens\n"
                  "are then recorded tokens, source + target, whole pairs (16384, --quick 2048) and evaluated\n"
                  "target tokens (3000, --quick 400); --quick also sweeps 25 % and 100 % only, but still times\n"
                  "the decoding (speed-ups are against the all-experts run of the same router).\n");
    t.positionals({}, 0)
        .text("out", "DIR", "moefy-demo", "the demo folder to write")
        .integer("seed", "S", 0, 0, std::numeric_limits<int64_t>::max(), "seed of every stage")
        .flag("force", "replace an existing DIR")
        .flag("quick", "fewer tokens and epochs, no timing (for tests)")
        .flag("translation", "the translation study on the bundled T5 and Bible corpus instead")
        .text("model", "MODEL_DIR", "", "the dense model (empty = data/models/brown-relu)")
        .text("corpus", "TRAIN_CORPUS", "", "the recording corpus (empty = data/corpus/brown/train)")
        .text("eval-corpus", "HELD_OUT_CORPUS", "", "the evaluation corpus (empty = data/corpus/brown/heldout)")
        .integer("tokens", "N", 0, 1, int64_t{1} << 50, "recorded tokens (0 = 32768, or 4096 with --quick)", {}, true)
        .integer("eval-tokens", "N", 0, 1, int64_t{1} << 50, "evaluation tokens (0 = 4096, or 1024 with --quick)", {},
                 true)
        .integer("experts", "E", 16, 1, 1 << 24, "experts per layer")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

CommandRegistrar demoCmd(demoOptionTable(), runDemo);

}  // namespace

}  // namespace moefy::cli
