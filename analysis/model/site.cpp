#include "analysis/model/site.h"

#include <cctype>

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

std::vector<std::string> siteNames(const std::vector<Site>& sites) {
  std::vector<std::string> out;
  out.reserve(sites.size());
  for (const Site& s : sites) out.push_back(s.name());
  return out;
}

int siteIndexOf(const Site& site, int encoderLayers) {
  if (site.expert >= 0 || site.shared) return -1;
  return site.stack == SiteStack::Decoder ? encoderLayers + site.layer : site.layer;
}

}  // namespace moefy
