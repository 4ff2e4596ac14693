#include "analysis/model/site.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"

namespace moefy {

std::string Site::name() const {
  std::string s = stack == SiteStack::Encoder ? "enc.blk." : stack == SiteStack::Decoder ? "dec.blk." : "blk.";
  s += std::to_string(layer);
  if (shared)
    s += ".shared";
  else if (expert >= 0)
    s += ".exp." + std::to_string(expert);
  return s;
}

namespace {

// A non-negative decimal without sign or leading zeros (so names round-trip).
bool parseIndex(const std::string& t, size_t& pos, int& out) {
  const size_t start = pos;
  while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) ++pos;
  const size_t n = pos - start;
  if (n == 0 || n > 9 || (n > 1 && t[start] == '0')) return false;
  out = std::stoi(t.substr(start, n));
  return true;
}

bool eat(const std::string& t, size_t& pos, const char* lit) {
  const std::string l(lit);
  if (t.compare(pos, l.size(), l) != 0) return false;
  pos += l.size();
  return true;
}

}  // namespace

std::optional<Site> Site::tryParse(const std::string& t) {
  Site s;
  size_t pos = 0;
  if (eat(t, pos, "enc."))
    s.stack = SiteStack::Encoder;
  else if (eat(t, pos, "dec."))
    s.stack = SiteStack::Decoder;
  if (!eat(t, pos, "blk.") || !parseIndex(t, pos, s.layer)) return std::nullopt;
  if (pos == t.size()) return s;
  if (eat(t, pos, ".shared")) {
    s.shared = true;
    return pos == t.size() ? std::optional<Site>(s) : std::nullopt;
  }
  if (eat(t, pos, ".exp.") && parseIndex(t, pos, s.expert) && pos == t.size()) return s;
  return std::nullopt;
}

Site Site::parse(const std::string& t) {
  if (auto s = tryParse(t)) return *s;
  throw ParameterError("'" + t + "' is not an FFN site (blk.L, enc.blk.L, dec.blk.L, blk.L.exp.E or blk.L.shared)");
}

std::optional<Site> parseSiteKey(const std::string& key) {
  if (auto s = Site::tryParse(key)) return s;
  size_t pos = 0;
  int layer = 0;
  if (parseIndex(key, pos, layer) && pos == key.size()) return Site::ofLayer(layer);
  return std::nullopt;
}

std::vector<std::string> siteNames(const std::vector<int>& layers) {
  std::vector<std::string> out;
  out.reserve(layers.size());
  for (int L : layers) out.push_back(Site::ofLayer(L).name());
  return out;
}

std::string siteJsonKey(const Site& site) {
  return site.stack == SiteStack::Single && site.expert < 0 && !site.shared ? std::to_string(site.layer) : site.name();
}

std::vector<std::string> siteNames(const std::vector<Site>& sites) {
  std::vector<std::string> out;
  out.reserve(sites.size());
  for (const Site& s : sites) out.push_back(s.name());
  return out;
}

std::vector<Site> readSiteList(const nlohmann::json& j, const std::vector<int>& layers, const std::string& context) {
  std::vector<Site> out;
  if (!j.is_object() || !j.contains("sites")) {
    for (int L : layers) out.push_back(Site::ofLayer(L));
    return out;
  }
  const nlohmann::json& names = j.at("sites");
  if (!names.is_array() || names.size() != layers.size())
    throw FormatError(context + ": 'sites' must be a list of site names as long as 'layers'");
  int encoderLayers = -1;  // implied by the decoder sites
  // Expert sites (native MoE models) derive their indices from the model's
  // layer and expert counts, which the artefact then carries.
  int modelLayers = -1, nativeExperts = -1;
  if (j.contains("model_layers") && j.contains("native_experts")) {
    const auto& a = j.at("model_layers");
    const auto& b = j.at("native_experts");
    if (!a.is_number_integer() || !b.is_number_integer() || a.get<int64_t>() < 1 || b.get<int64_t>() < 1 ||
        a.get<int64_t>() > (1 << 20) || b.get<int64_t>() > (1 << 20))
      throw FormatError(context + ": model_layers and native_experts must be positive integers");
    modelLayers = a.get<int>();
    nativeExperts = b.get<int>();
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const std::optional<Site> site = names[i].is_string() ? Site::tryParse(names[i].get<std::string>()) : std::nullopt;
    if (site && (site->expert >= 0 || site->shared)) {
      if (modelLayers < 0 || expertSiteIndexOf(*site, modelLayers, nativeExperts) != layers[i])
        throw FormatError(context + ": sites[" + std::to_string(i) + "] = " + names[i].dump() +
                          " is not the expert site of layers[" + std::to_string(i) +
                          "] = " + std::to_string(layers[i]) +
                          (modelLayers < 0 ? " (expert sites need model_layers and native_experts)" : ""));
      out.push_back(*site);
      continue;
    }
    bool ok = site && site->expert < 0 && !site->shared;
    if (ok && site->stack != SiteStack::Decoder) ok = site->layer == layers[i];
    if (ok && site->stack == SiteStack::Decoder) {
      const int enc = layers[i] - site->layer;
      ok = enc >= 1 && (encoderLayers < 0 || encoderLayers == enc);
      encoderLayers = enc;
    }
    if (!ok)
      throw FormatError(context + ": sites[" + std::to_string(i) + "] = " + names[i].dump() +
                        " is not the FFN site of layers[" + std::to_string(i) + "] = " + std::to_string(layers[i]));
    out.push_back(*site);
  }
  return out;
}

int siteIndexOf(const Site& site, int encoderLayers) {
  if (site.expert >= 0 || site.shared) return -1;
  return site.stack == SiteStack::Decoder ? encoderLayers + site.layer : site.layer;
}

int expertSiteIndexOf(const Site& site, int layers, int experts) {
  if (site.stack != SiteStack::Single || site.layer < 0 || site.layer >= layers || experts <= 0) return -1;
  if (site.shared) return layers * (1 + experts) + site.layer;
  if (site.expert < 0 || site.expert >= experts) return -1;
  return layers + site.layer * experts + site.expert;
}

}  // namespace moefy
