#include "analysis/route/route_options.h"

#include <cstdio>
#include <limits>
#include <string>

#include "analysis/common/error.h"
#include "analysis/model/device.h"

namespace moefy {

const OptionTable& routeOptionTable() {
  static const OptionTable table = [] {
    const RouteOptions d;
    OptionTable t("route", "build routers (oracle | similarity | mlp | sigmoid | dynamic-k) for a partition",
                  "moefy route MODEL_DIR REC_DIR PART_DIR --router oracle|similarity|mlp|sigmoid|dynamic-k [--top-k K "
                  "| --top-fraction F\n"
                  "                   | --budget F [--allocate activity|greedy]]\n"
                  "                   --out ROUTER_DIR [options]\n",
                  "Builds one router per partitioned layer from the recording's samples\n"
                  "(blk.L.ffn_in / blk.L.ffn_act; an expert site blk.L.exp.E of a native MoE model: the sampled\n"
                  "tokens routed to the expert):\n"
                  "  oracle      top-k experts by activation mass (ground truth, needs the dense hidden)\n"
                  "  similarity  expert centroids of the L2-normalised W1 rows (gate rows for gated FFNs)\n"
                  "  mlp         MoEfication's Linear(d_model,E)-Tanh-Linear(E,E) router trained with\n"
                  "              BCE-with-logits on the per-expert activation mass / its max (Adam)\n"
                  "  sigmoid     sigma-MoE's sigmoid(x W^T) router (raw x, no bias), trained like mlp\n"
                  "  dynamic-k   Dense-to-Dynamic-k MoE: a linear head predicts each expert's output norm\n"
                  "              (regression on log ||W2_e h_e||, Adam); a token takes experts in descending\n"
                  "              predicted norm until --tau of the predicted total is covered, at least\n"
                  "              --min-k and at most the top-k\n"
                  "Reports, per layer on the held-out samples, mass_recall (share of the oracle top-k's\n"
                  "activation mass that the router's top-k captures) and overlap (mean |router top-k & oracle\n"
                  "top-k| / k). Writes router.json and router.safetensors (docs/formats.md). Refuses an existing\n"
                  "ROUTER_DIR unless --force.\n"
                  "--budget F replaces --top-k/--top-fraction by a top-k per layer whose FFN FLOPs (docs/moe.md,\n"
                  "\"Compute accounting\") stay within F of the dense FFN's: from one expert per layer, one more\n"
                  "expert at a time goes to the layer with the most recorded active neurons per token per expert\n"
                  "it has (--allocate activity), or whose held-out output error drops most per FLOP (greedy).\n"
                  "router.json records the allocation (docs/formats.md \"Router\").\n");
    t.positionals({"MODEL_DIR", "REC_DIR", "PART_DIR"}, 3)
        .choice("router", {"oracle", "similarity", "mlp", "sigmoid", "dynamic-k"}, std::nullopt,
                "router kind (required)", routerKindName(d.kind))
        .integer("top-k", "K", d.topK, 1, 1 << 24, "experts per token (dynamic-k: the most; 0 = from --top-fraction)",
                 {}, true)
        .real("top-fraction", "F", d.topFraction, 0, 1, "fraction of the experts selected per token", true)
        .text("out", "ROUTER_DIR", std::nullopt, "the router folder to write (required)")
        .flag("force", "replace an existing ROUTER_DIR")
        .integer("epochs", "N", d.epochs, 1, 1000000, "training epochs", "mlp, sigmoid, dynamic-k")
        .integer("batch", "B", d.batch, 1, 1 << 24, "training batch in samples", "mlp, sigmoid, dynamic-k")
        .real("lr", "LR", d.lr, 0, 10, "Adam learning rate", true, "mlp, sigmoid, dynamic-k")
        .real("tau", "F", d.tau, 0, 1, "share of the predicted total output norm a token's experts cover", true,
              "dynamic-k")
        .integer("min-k", "K", d.minK, 1, 1 << 24, "fewest experts per token", "dynamic-k")
        .real("budget", "F", d.budget, 0, 1,
              "global FFN FLOP budget, a fraction of the dense FFN FLOPs (router included), shared out as a top-k "
              "per layer (0 = off: every layer at --top-k / --top-fraction)")
        .choice(
            "allocate", {"activity", "greedy"}, d.allocate,
            "how --budget is shared out: by the recorded activity per layer, or greedily by a held-out output-error "
            "probe",
            {}, "--budget")
        .real("held-out", "F", d.heldOut, 0, 0.9, "fraction of the samples held out for the metrics")
        .integer("seed", "N", static_cast<int64_t>(d.seed), 0, std::numeric_limits<int64_t>::max(), "seed")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    addDeviceOption(t, "where the mlp, sigmoid and dynamic-k routers train (the model is not run)");
    return t;
  }();
  return table;
}

RouteOptions routeOptionsFrom(const OptionValues& v) {
  if (v.has("top-k") && v.has("top-fraction")) throw ParameterError("give --top-k or --top-fraction, not both");
  if (v.has("budget") && (v.has("top-k") || v.has("top-fraction")))
    throw ParameterError("give --budget or --top-k/--top-fraction, not both");
  if (v.has("allocate") && !v.has("budget")) throw ParameterError("--allocate needs --budget");
  RouteOptions o;
  o.kind = routerKindFromName(v.text("router"), "--router");
  o.topK = v.int32("top-k");
  o.topFraction = v.real("top-fraction");
  o.epochs = v.int32("epochs");
  o.batch = v.int32("batch");
  o.lr = v.real("lr");
  o.tau = v.real("tau");
  o.minK = v.int32("min-k");
  o.heldOut = v.real("held-out");
  o.seed = v.seed("seed");
  o.device = deviceOption(v);
  if (v.has("budget")) {
    // The table admits 0 (its default: off); given, the budget must be positive.
    o.budget = v.real("budget");
    if (!(o.budget > 0)) {
      char b[32];
      std::snprintf(b, sizeof b, "%g", o.budget);
      throw ParameterError(std::string("--budget: ") + b + " is outside (0, 1] (a fraction of the dense FFN FLOPs)");
    }
  }
  o.allocate = v.text("allocate");
  return o;
}

}  // namespace moefy
