#pragma once
// FFN sites: the key of every per-layer quantity (hooks, recordings,
// partitions, routers, evaluation results, the studio's layer pickers).
//
// Canonical names (llama.cpp-style prefixes; tensors of a site are named
// "<site>.<what>", e.g. "blk.3.ffn_act", "blk.3.labels"):
//   blk.L          the FFN of layer L of a single-stack (decoder-only or
//                  encoder-only) model: what every current architecture has
//   enc.blk.L      layer L of an encoder-decoder model's encoder
//   dec.blk.L      layer L of an encoder-decoder model's decoder
//   blk.L.exp.E    expert E of a native MoE layer L (also enc./dec.)
//   blk.L.shared   the shared expert of a native MoE layer L (also enc./dec.)
// Version 1 artefacts key JSON by the bare layer number ("3"); readers accept
// both (siteKeyOf / parseSiteKey).
#include <compare>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace moefy {

enum class SiteStack { Single, Encoder, Decoder };

struct Site {
  SiteStack stack = SiteStack::Single;
  int layer = 0;        ///< >= 0
  int expert = -1;      ///< native expert id, -1 = the whole FFN (or the shared expert)
  bool shared = false;  ///< the shared expert of a native MoE layer

  /// The single-stack FFN of `layer` ("blk.L").
  static Site ofLayer(int layer) { return Site{SiteStack::Single, layer, -1, false}; }
  /// The canonical name ("blk.3", "enc.blk.0", "blk.2.exp.7", "blk.2.shared").
  std::string name() const;
  /// Parses a canonical name. Throws ParameterError naming the text.
  static Site parse(const std::string& text);
  /// nullopt instead of throwing.
  static std::optional<Site> tryParse(const std::string& text);
  /// Prefix of the site's tensors: name() + ".".
  std::string prefix() const { return name() + "."; }
  auto operator<=>(const Site&) const = default;
};

/// The JSON key a version 2 artefact uses for a per-site entry (the site name).
inline std::string siteKeyOf(int layer) { return Site::ofLayer(layer).name(); }
/// The key of a site's entry in per-site JSON objects (metrics, training
/// logs): the bare layer number for single-stack sites (as every version has
/// written them), the site name otherwise ("enc.blk.0"). parseSiteKey reads both.
std::string siteJsonKey(const Site& site);
/// Reads a per-site JSON key: a canonical site name, or (version 1) a bare
/// non-negative layer number meaning the single-stack site. nullopt otherwise.
std::optional<Site> parseSiteKey(const std::string& key);

/// Site names of single-stack layers, in order.
std::vector<std::string> siteNames(const std::vector<int>& layers);
/// The names of `sites`, in order.
std::vector<std::string> siteNames(const std::vector<Site>& sites);

// Site indices. Per-site artefacts (recordings, partitions, routers) and the
// MoE FFN index their whole-FFN sites by the site's position in the model's
// FFN site list (ModelConfig::ffnSites()): blk.L -> L for single-stack models,
// enc.blk.L -> L and dec.blk.L -> encoderLayers + L for encoder-decoder models.
// Their JSON lists these indices as `layers` (unchanged for single-stack
// models) and the site names as `sites`.

/// The site index of a whole-FFN site (expert and shared sites have none: -1),
/// given the encoder's layer count (ignored for single-stack sites).
int siteIndexOf(const Site& site, int encoderLayers);

// Expert site indices. Native MoE models (single-stack, `layers` blocks, E
// routed experts per MoE layer) continue the indices past their whole-FFN
// sites, so that recordings, partitions and routers key an expert like any
// other site: blk.L.exp.E -> layers + L * E + E, blk.L.shared ->
// layers * (1 + E) + L. The blk.L entry of a MoE layer (index L) is no FFN of
// its own and is never recorded; its routing statistics are keyed by the
// layer (docs/formats.md "Recording", native MoE models).

/// The site index of an expert (blk.L.exp.E) or shared-expert (blk.L.shared)
/// site of a single-stack model with `layers` blocks and `experts` routed
/// experts per MoE layer; -1 for any other site or an expert id >= experts.
/// Whether layer L is a MoE layer is the caller's check (ModelConfig::siteIndex).
int expertSiteIndexOf(const Site& site, int layers, int experts);

/// Reads the `sites` list of a per-site artefact's JSON object `j`: site
/// names parallel to `layers` (site indices), each a whole-FFN site whose
/// index agrees with its entry (blk.L and enc.blk.L at L; dec.blk.L at one
/// common encoder count + L), or an expert site blk.L.exp.E / blk.L.shared
/// whose index is expertSiteIndexOf(site, j.model_layers, j.native_experts)
/// (keys that artefacts with expert sites carry). When `j` has no `sites` key (version 1, or any
/// single-stack artefact), the single-stack sites of `layers`. Throws
/// FormatError naming `context` and the entry.
std::vector<Site> readSiteList(const nlohmann::json& j, const std::vector<int>& layers, const std::string& context);

}  // namespace moefy
