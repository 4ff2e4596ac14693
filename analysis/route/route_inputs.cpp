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
    if (sites[i].expert >= 0 || sites[i].shared)
      throw ParameterError((dir / "partition.json").string() + ": site " + sites[i].name() +
                           " is an expert of a native MoE layer; routing and evaluating MoEfied experts is not "
                           "supported yet (split and its metrics are)");
    if (c.ffnSiteIndex(sites[i]) != layers[i])
      throw ParameterError((dir / "partition.json").string() + ": site " + sites[i].name() + " (layer " +
                           std::to_string(layers[i]) + ") does not exist in the model (" +
                           std::to_string(c.ffnSites().size()) + " FFN sites)");
    if (labels[i].numel() != c.dFF)
      throw ParameterError((dir / "labels.safetensors").string() + ": layer " + std::to_string(layers[i]) + " has " +
                           std::to_string(labels[i].numel()) + " labels, the model's d_ff is " + std::to_string(c.dFF));
  }
}

SampleData SampleData::read(const fs::path& dir, const std::vector<Site>& sites, int64_t dModel, int64_t dFF) {
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
  s.samples = -1;
  std::map<SiteStack, int64_t> stackSamples;  // one reservoir per stack
  for (const Site& site : sites) {
    for (int which = 0; which < 2; ++which) {
      std::string name = site.prefix() + (which == 0 ? "ffn_in" : "ffn_act");
      const TensorInfo* info = st->find(name);
      if (!info)
        throw FormatError(sf.string() + ": missing tensor '" + name + "' (site " + site.name() + " not recorded)");
      int64_t width = which == 0 ? dModel : dFF;
      if (info->shape.size() != 2 || info->shape[1] != width)
        throw FormatError(sf.string() + ": tensor '" + name + "' has shape " + shapeString(info->shape) +
                          ", expected [S, " + std::to_string(width) + "]");
      if (s.samples < 0) s.samples = info->shape[0];
      const int64_t want = stackSamples.emplace(site.stack, info->shape[0]).first->second;
      if (info->shape[0] != want)
        throw FormatError(sf.string() + ": tensor '" + name + "' has " + std::to_string(info->shape[0]) +
                          " samples, other sites of its stack have " + std::to_string(want));
      if (info->shape[0] <= 0) throw FormatError(sf.string() + ": no samples of site " + site.name());
      at::Tensor t = st->f32(name).contiguous();
      if (!at::isfinite(t).all().item<bool>())
        throw FormatError(sf.string() + ": tensor '" + name + "' has NaN or Inf values");
      (which == 0 ? s.ffnIn : s.ffnAct).push_back(t);
    }
  }
  if (s.samples <= 0) throw FormatError(sf.string() + ": no samples");
  return s;
}

void SampleData::checkModel(const Model& model) const {
  if (!modelFingerprint.empty() && modelFingerprint != model.fingerprint())
    throw ParameterError((dir / "manifest.json").string() + ": recording was made with model " + modelFingerprint +
                         ", not with " + model.dir().string() + " (fingerprint " + model.fingerprint() + ")");
}

}  // namespace moefy
