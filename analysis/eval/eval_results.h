#pragma once
// The validating reader of an evaluation folder (eval.json, docs/formats.md
// "Evaluation"): the dense reference and the results grouped by router, each
// series sorted by active-expert fraction. The CLI and the studio read
// evaluations through this one reader.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/eval/eval_data.h"

namespace moefy {

struct EvalResults {
  struct Point {
    double fraction = 0;  ///< active-expert fraction k/E in (0, 1]
    std::string topK;     ///< the per-layer top-k list as JSON text ("" if absent)
    double loss = 0, perplexity = 0, lossDelta = 0, top1 = 0, kl = 0;
    double forwardSpeedup = 0,
           generateSpeedup = 0;  ///< median ratio; NaN when the run had no --speed (or an oracle router)
    double forwardSpeedupMin = 0, forwardSpeedupMax = 0;    ///< spread over the timed runs; NaN when not recorded
    double generateSpeedupMin = 0, generateSpeedupMax = 0;  ///< likewise for generation
    int forwardRuns = 0, generateRuns = 0;                  ///< timed runs behind the figure (0 = not recorded)
    std::string speedNote;                                  ///< why a result has no speed (e.g. oracle router)
    double ffnFlopsFraction = 0;  ///< FFN FLOPs per token / the dense FFN's; NaN when not recorded
    /// Per site index (the eval's FFN site list, encoder sites then decoder
    /// sites for T5): ||moe(x) - dense(x)|| / ||dense(x)|| of the FFN output at
    /// the MoE model's own FFN inputs (analysis/eval/eval.cpp), >= 0; NaN
    /// where eval.json has null (a site left dense). Empty when not recorded.
    std::vector<double> layerRelError;
  };
  struct Series {
    std::string router;         ///< the result's "router" (else "name"), with " (enc)" etc. when it has a site_group
    std::vector<Point> points;  ///< ascending fraction
  };
  std::filesystem::path dir;
  nlohmann::json json;                        ///< eval.json as read
  double densePerplexity = 0, denseLoss = 0;  ///< NaN when the reference lacks them
  bool hasSpeed = false, hasGenerateSpeed = false;
  std::vector<Series> series;  ///< in order of first appearance
  /// The data the figures are on (analysis/eval/eval_data.h
  /// evalDataSelection): corpus, split, sequences, seed; unset parts for
  /// evaluations written before they were recorded.
  DataSelection data;
  /// The FFN site name of each index of the per-site lists (layer_rel_error,
  /// top_k), as long as the longest layer_rel_error: the source partition's
  /// site list (partition.json `sites`, read with readSiteList) where the
  /// link in `source.partition` resolves and names the index (an
  /// encoder-decoder partition names every index: its decoder sites give the
  /// encoder's layer count, enc.blk.L then dec.blk.L); else "blk.L"
  /// for evaluations of single-stack models and "site L" for encoder-decoder
  /// ones (results with a site_group), whose indices need the encoder's
  /// layer count. An unreadable partition.json only loses the names.
  std::vector<std::string> siteNames;
  size_t resultCount() const;
  /// describeData(data, brief): the caption line of every figure of this
  /// evaluation (brief: a plot's subtitle).
  std::string dataCaption(bool brief = false) const;

  /// Reads DIR/eval.json with readEvalFile (analysis/eval/eval_file.h: the
  /// one JSON parser and the value invariants) and checks that every result
  /// has a numeric fraction in (0, 1]. Missing loss_delta is derived from the
  /// reference loss; layer_rel_error (validated there: null or finite >= 0)
  /// is copied with null as NaN. Throws IoError (missing file) or FormatError naming
  /// eval.json and the key. Thread-safe.
  static EvalResults read(const std::filesystem::path& dir);
};

}  // namespace moefy
