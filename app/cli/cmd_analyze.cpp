// moefy analyze: expert similarity, router preference and usage health of a native MoE model or a MoE export.
#include <filesystem>
#include <iostream>

#include "analysis/analyze/analyze_options.h"
#include "analysis/analyze/moe_analysis.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

// The per-site scalars worth a line in the terminal (the matrices are in the folder).
nlohmann::json summaryOf(const nlohmann::json& doc) {
  nlohmann::json s;
  s["out"] = doc.value("out", std::string());
  s["model"] = doc["model"];
  s["router"] = doc["router"];
  s["corpus"] = doc["corpus"];
  if (doc.contains("top1_norm_share")) s["top1_norm_share"] = doc["top1_norm_share"];
  s["sites"] = doc["sites"];
  return s;
}

int runAnalyze(const Args& a) {
  const fs::path modelDir = a.pos(0, "MODEL_DIR");
  const AnalyzeOptions o = analyzeOptionsFrom(a);
  fs::path corpus;
  if (a.positional.size() > 1) {
    if (!o.dynamicAnalyses)
      throw ParameterError("--static-only: CORPUS '" + a.positional[1] + "' given but not used; drop one of them");
    corpus = a.positional[1];
  } else if (o.dynamicAnalyses) {
    throw ParameterError(
        "missing argument CORPUS: the dynamic analyses run on a corpus (give --static-only for the weight analyses "
        "alone)");
  }
  const fs::path out = a.text("out");
  if (out.empty()) throw ParameterError("--out: empty (the analysis folder to write)");
  checkOutput(out, a.flag("force"), "MoE analysis", {modelDir, corpus});
  auto job = makeCliJob(a);
  job->setStage("load model");
  const LoadedModel loaded = loadModel(modelDir);
  nlohmann::json doc = analyzeMoeModel(loaded, modelDir, corpus, o, out, a.flag("force"), *job);
  doc["out"] = out.string();
  if (a.json()) {
    printJson(summaryOf(doc));
    return 0;
  }
  std::cout << "wrote " << out.string() << ": " << doc["sites"].size() << " MoE layers of " << modelDir.string() << " ("
            << doc["model"]["kind"].get<std::string>() << ", router " << doc["router"]["kind"].get<std::string>()
            << ")";
  if (!doc["corpus"].is_null()) std::cout << ", " << doc["corpus"]["tokens"].get<int64_t>() << " corpus tokens";
  std::cout << "\n";
  for (const auto& [site, s] : doc["sites"].items()) {
    std::cout << "  " << site << ":";
    // Exports: a plain FFN has no gate, and a router without one row per expert no R^2.
    const nlohmann::json& r2 = s["router_r2"];
    if (r2.is_object()) {
      std::cout << " router R^2 vs expert similarity";
      for (const char* p : {"gate", "up", "down"})
        if (r2["sim"].contains(p)) std::cout << " " << p << " " << metricText(r2["sim"][p]);
    } else {
      std::cout << " router_sim " << s.value("router_sim", std::string("n/a"));
    }
    if (s.contains("dynamic")) {
      const auto& d = s["dynamic"];
      std::cout << "; output similarity " << metricText(d["output_similarity"]) << ", top-1 = largest norm "
                << metricText(d["top1_norm_share"]) << ", usage perplexity " << metricText(d["usage_perplexity"])
                << ", dead " << metricText(d["dead_share"]);
    }
    std::cout << "\n";
  }
  if (doc.contains("top1_norm_share"))
    std::cout << "  all layers: the top-scored expert has the largest output norm for "
              << metricText(doc["top1_norm_share"]) << " of the tokens\n";
  return 0;
}

CommandRegistrar analyzeCmd(analyzeOptionTable(), runAnalyze);

}  // namespace

}  // namespace moefy::cli
