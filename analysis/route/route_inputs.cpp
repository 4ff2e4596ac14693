#include "analysis/route/route_inputs.h"

#include <torch/torch.h>

#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

nlohmann::json readJson(const fs::path& p) {
  if (!fs::exists(p)) throw IoError(p.string() + ": missing");
  try {
    return nlohmann::json::parse(readFile(p));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(p.string() + ": malformed JSON");
  }
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
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a partition folder");
  PartitionData p;
  p.dir = dir;
  fs::path pj = dir / "partition.json";
  p.meta = readJson(pj);
  const auto& m = p.meta;
  if (!m.is_object() || m.value("format", "") != "moefy-partition")
    throw FormatError(pj.string() + ": not a moefy partition (format must be 'moefy-partition')");
  if (!m.contains("experts") || !m["experts"].is_number_integer() || m["experts"].get<int>() <= 0)
    throw FormatError(pj.string() + ": 'experts' must be a positive integer");
  p.experts = m["experts"].get<int>();
  p.modelFingerprint = m.value("model_fingerprint", "");
  fs::path lf = dir / "labels.safetensors";
  if (!fs::exists(lf)) throw IoError(lf.string() + ": missing");
  auto st = SafetensorsFile::open(lf);
  if (m.contains("layers") && m["layers"].is_array()) {
    for (const auto& v : m["layers"]) {
      if (!v.is_number_integer() || v.get<int>() < 0) throw FormatError(pj.string() + ": 'layers' must list layer indices");
      p.layers.push_back(v.get<int>());
    }
  } else {
    for (const auto& t : st->tensors()) {
      int L = -1;
      if (std::sscanf(t.name.c_str(), "blk.%d.labels", &L) == 1 && t.name == "blk." + std::to_string(L) + ".labels")
        p.layers.push_back(L);
    }
  }
  std::sort(p.layers.begin(), p.layers.end());
  if (p.layers.empty()) throw FormatError(pj.string() + ": no partitioned layers");
  for (int L : p.layers) {
    std::string name = "blk." + std::to_string(L) + ".labels";
    const TensorInfo* info = st->find(name);
    if (!info) throw FormatError(lf.string() + ": missing tensor '" + name + "'");
    if (info->dtype != DType::I32 && info->dtype != DType::I64)
      throw FormatError(lf.string() + ": tensor '" + name + "' must be I32");
    if (info->shape.size() != 1) throw FormatError(lf.string() + ": tensor '" + name + "' must be 1-D [d_ff]");
    at::Tensor l = st->raw(name).to(at::kInt).clone();
    int lo = l.min().item<int>(), hi = l.max().item<int>();
    if (lo < 0 || hi >= p.experts)
      throw FormatError(lf.string() + ": tensor '" + name + "' has label " + std::to_string(lo < 0 ? lo : hi) +
                        " outside [0, " + std::to_string(p.experts) + ")");
    p.labels.push_back(l);
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
    if (layers[i] >= c.nLayer)
      throw ParameterError((dir / "partition.json").string() + ": layer " + std::to_string(layers[i]) +
                           " does not exist in the model (" + std::to_string(c.nLayer) + " layers)");
    if (labels[i].numel() != c.dFF)
      throw ParameterError((dir / "labels.safetensors").string() + ": layer " + std::to_string(layers[i]) + " has " +
                           std::to_string(labels[i].numel()) + " labels, the model's d_ff is " + std::to_string(c.dFF));
  }
}

SampleData SampleData::read(const fs::path& dir, const std::vector<int>& layers, int64_t dModel, int64_t dFF) {
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
  for (int L : layers) {
    for (int which = 0; which < 2; ++which) {
      std::string name = "blk." + std::to_string(L) + (which == 0 ? ".ffn_in" : ".ffn_act");
      const TensorInfo* info = st->find(name);
      if (!info) throw FormatError(sf.string() + ": missing tensor '" + name + "' (layer " + std::to_string(L) + " not recorded)");
      int64_t width = which == 0 ? dModel : dFF;
      if (info->shape.size() != 2 || info->shape[1] != width)
        throw FormatError(sf.string() + ": tensor '" + name + "' has shape " + shapeString(info->shape) + ", expected [S, " +
                          std::to_string(width) + "]");
      if (s.samples < 0) s.samples = info->shape[0];
      if (info->shape[0] != s.samples)
        throw FormatError(sf.string() + ": tensor '" + name + "' has " + std::to_string(info->shape[0]) +
                          " samples, other layers have " + std::to_string(s.samples));
      at::Tensor t = st->f32(name).contiguous();
      if (!at::isfinite(t).all().item<bool>()) throw FormatError(sf.string() + ": tensor '" + name + "' has NaN or Inf values");
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
