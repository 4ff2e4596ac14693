#include "analysis/route/route_inputs.h"

#include <torch/torch.h>

#include <map>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "analysis/split/split.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

nlohmann::json readJson(const fs::path& p) {
  if (!fs::exists(p)) throw IoError(p.string() + ": missing");
  return readJsonFile(p);
}

}  // namespace

std::string hashLabels(const std::vector<at::Tensor>& labels) {
  uint64_t h = kFnvOffset;
  const unsigned char sep = 0xff;
  for (const auto& l : labels) {
    at::Tensor c = l.to(at::kInt).contiguous();
    h = fnv1a(h, c.data_ptr<int32_t>(), static_cast<size_t>(c.numel()) * 4);
    h = fnv1a(h, &sep, 1);
  }
  return hex16(h);
}

int PartitionData::indexOfLayer(int layer) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i] == layer) return static_cast<int>(i);
  return -1;
}

PartitionData PartitionData::read(const fs::path& dir) {
  // One validating reader of the format (analysis/split: Partition::open).
  const Partition part = Partition::open(dir);
  PartitionData p;
  p.dir = dir;
  p.meta = part.json();
  p.experts = part.experts();
  p.modelFingerprint = part.fingerprint();
  p.layers = part.layers();
  if (p.layers.empty()) throw FormatError((dir / "partition.json").string() + ": no partitioned layers");
  std::sort(p.layers.begin(), p.layers.end());
  for (int L : p.layers) {
    p.labels.push_back(part.labelsTensor(L));
    p.shared.push_back(part.sharedNeurons(L));
    p.sites.push_back(part.site(L));
  }
  p.labelsHash = hashLabels(p.labels);
  return p;
}

void PartitionData::checkModel(const Model& model) const {
  const auto& c = model.config();
  if (!modelFingerprint.empty() && modelFingerprint != model.fingerprint())
    throw ParameterError((dir / "partition.json").string() + ": partition was made for model " + modelFingerprint +
                         ", not for " + model.dir().string() + " (fingerprint " + model.fingerprint() + ")");
  for (size_t i = 0; i < layers.size(); ++i) {
    // siteIndex covers whole-FFN sites and the expert sites of native MoE layers.
    if (c.siteIndex(sites[i]) != layers[i])
      throw ParameterError((dir / "partition.json").string() + ": site " + sites[i].name() + " (index " +
                           std::to_string(layers[i]) + ") does not exist in the model (" +
                           std::to_string(c.indexedSites().size()) + " FFN sites)");
    const int width = c.siteWidth(sites[i]);
    if (labels[i].numel() != width)
      throw ParameterError((dir / "labels.safetensors").string() + ": site " + sites[i].name() + " has " +
                           std::to_string(labels[i].numel()) + " labels, the model's width there is " +
                           std::to_string(width));
  }
}

namespace {

// Reads one F32 sample tensor `name` of shape [*, width] and checks it is finite.
at::Tensor sampleTensor(const SafetensorsFile& st, const std::string& file, const std::string& name, int64_t width,
                        const Site& site) {
  const TensorInfo* info = st.find(name);
  if (!info) throw FormatError(file + ": missing tensor '" + name + "' (site " + site.name() + " not recorded)");
  if (info->shape.size() != 2 || info->shape[1] != width)
    throw FormatError(file + ": tensor '" + name + "' has shape " + shapeString(info->shape) + ", expected [S, " +
                      std::to_string(width) + "]");
  at::Tensor t = st.f32(name).contiguous();
  if (!at::isfinite(t).all().item<bool>()) throw FormatError(file + ": tensor '" + name + "' has NaN or Inf values");
  return t;
}

}  // namespace

SampleData SampleData::read(const fs::path& dir, const std::vector<Site>& sites, int64_t dModel, int64_t dFF) {
  for (const Site& site : sites)
    if (site.expert >= 0 || site.shared)
      throw ParameterError(dir.string() + ": site " + site.name() +
                           " is an expert site; read its samples with the model's config (SampleData::read)");
  return readSites(dir, sites, dModel, std::vector<int64_t>(sites.size(), dFF));
}

SampleData SampleData::read(const fs::path& dir, const std::vector<Site>& sites, const ModelConfig& config) {
  std::vector<int64_t> widths;
  for (const Site& site : sites) widths.push_back(config.siteWidth(site));
  return readSites(dir, sites, config.dModel, widths);
}

SampleData SampleData::readSites(const fs::path& dir, const std::vector<Site>& sites, int64_t dModel,
                                 const std::vector<int64_t>& widths) {
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a recording folder");
  SampleData s;
  s.dir = dir;
  fs::path mf = dir / "manifest.json";
  s.manifest = readJson(mf);
  if (!s.manifest.is_object() || s.manifest.value("format", "") != "moefy-recording")
    throw FormatError(mf.string() + ": not a moefy recording (format must be 'moefy-recording')");
  if (s.manifest.contains("model") && s.manifest["model"].is_object())
    s.modelFingerprint = s.manifest["model"].value("fingerprint", "");
  fs::path sf = dir / "samples.safetensors";
  if (!fs::exists(sf)) throw IoError(sf.string() + ": missing (record with samples > 0)");
  auto st = SafetensorsFile::open(sf);
  const std::string file = sf.string();
  s.samples = -1;
  std::map<SiteStack, int64_t> stackSamples;  // one reservoir per stack
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site& site = sites[i];
    // Expert and shared sites of a native MoE layer share the layer's FFN
    // input (blk.L.ffn_in); an expert's rows are the sampled tokens routed to
    // it (blk.L.exp.E.routed = 1), the others hold zeros (docs/formats.md "Recording").
    const bool expertSite = site.expert >= 0 || site.shared;
    const std::string inName = (expertSite ? Site::ofLayer(site.layer).prefix() : site.prefix()) + "ffn_in";
    at::Tensor in = sampleTensor(*st, file, inName, dModel, site);
    at::Tensor act = sampleTensor(*st, file, site.prefix() + "ffn_act", widths[i], site);
    if (act.size(0) != in.size(0))
      throw FormatError(file + ": tensor '" + site.prefix() + "ffn_act' has " + std::to_string(act.size(0)) +
                        " samples, '" + inName + "' has " + std::to_string(in.size(0)));
    if (s.samples < 0) s.samples = in.size(0);
    const int64_t want = stackSamples.emplace(site.stack, in.size(0)).first->second;
    if (in.size(0) != want)
      throw FormatError(file + ": tensor '" + inName + "' has " + std::to_string(in.size(0)) +
                        " samples, other sites of its stack have " + std::to_string(want));
    if (site.expert >= 0) {
      const std::string rn = site.prefix() + "routed";
      const TensorInfo* info = st->find(rn);
      if (!info) throw FormatError(file + ": missing tensor '" + rn + "' (site " + site.name() + " not recorded)");
      if (info->shape.size() != 1 || info->shape[0] != in.size(0))
        throw FormatError(file + ": tensor '" + rn + "' has shape " + shapeString(info->shape) + ", expected [" +
                          std::to_string(in.size(0)) + "]");
      at::Tensor rows = (st->f32(rn) != 0).nonzero().reshape({-1});
      if (rows.numel() == 0)
        throw FormatError(file + ": no sampled token was routed to " + site.name() +
                          " (record more tokens or more --samples)");
      in = in.index_select(0, rows).contiguous();
      act = act.index_select(0, rows).contiguous();
    }
    if (in.size(0) <= 0) throw FormatError(file + ": no samples of site " + site.name());
    s.ffnIn.push_back(in);
    s.ffnAct.push_back(act);
  }
  if (s.samples <= 0) throw FormatError(file + ": no samples");
  return s;
}

void SampleData::checkModel(const Model& model) const {
  if (!modelFingerprint.empty() && modelFingerprint != model.fingerprint())
    throw ParameterError((dir / "manifest.json").string() + ": recording was made with model " + modelFingerprint +
                         ", not with " + model.dir().string() + " (fingerprint " + model.fingerprint() + ")");
}

}  // namespace moefy
