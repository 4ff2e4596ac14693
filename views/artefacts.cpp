#include "views/artefacts.h"

#include <ATen/ATen.h>

#include <QDir>
#include <QFileInfo>
#include <QRegularExpression>
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "analysis/common/error.h"
#include "analysis/eval/eval_file.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/loader.h"

namespace moefy::views {

namespace {

std::filesystem::path P(const QString& s) { return std::filesystem::path(s.toStdString()); }

// The core's one JSON reader: regular files only, depth limit, no duplicate keys.
nlohmann::json readJson(const QString& file) { return readJsonFile(P(file)); }

void requireFormat(const nlohmann::json& j, const char* format, const QString& file) {
  if (!j.is_object() || j.value("format", std::string()) != format)
    throw FormatError(file.toStdString() + ": not a " + format + " file (\"format\" is missing or different)");
}

template <typename T>
std::vector<T> toVector(const at::Tensor& t0, at::ScalarType st) {
  at::Tensor t = t0.to(st).contiguous();
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), t.data_ptr(), out.size() * sizeof(T));
  return out;
}

at::Tensor need(const SafetensorsFile& f, const std::string& name, std::vector<int64_t> shape) {
  const TensorInfo* info = f.find(name);
  if (!info) throw FormatError(f.path().string() + ": tensor '" + name + "' is missing");
  if (!shape.empty() && info->shape != shape)
    throw FormatError(f.path().string() + ": tensor '" + name + "' has shape " + shapeString(info->shape) +
                      ", expected " + shapeString(shape));
  return f.raw(name);
}

std::vector<int> intList(const nlohmann::json& j) {
  std::vector<int> out;
  if (j.is_array())
    for (const auto& v : j)
      if (v.is_number_integer()) out.push_back(v.get<int>());
  return out;
}

}  // namespace

// ---------------------------------------------------------------- Workspace

const QStringList& Workspace::kinds() {
  static const QStringList k{"recordings", "partitions", "routers", "evaluations", "exports", "calibrated", "figures"};
  return k;
}

QString Workspace::resolve(const QString& path) const {
  if (path.isEmpty()) return path;
  QFileInfo fi(path);
  if (fi.isAbsolute()) return QDir::cleanPath(path);
  return QDir::cleanPath(QDir(dir).filePath(path));
}

QString Workspace::folder(const std::string& kind) const {
  auto it = folders.find(kind);
  return resolve(it != folders.end() ? it->second : QString::fromStdString(kind));
}

Workspace Workspace::load(const QString& d) {
  QString file = QDir(d).filePath("workspace.json");
  nlohmann::json j = readJson(file);
  requireFormat(j, "moefy-workspace", file);
  Workspace ws;
  ws.dir = QFileInfo(d).absoluteFilePath();
  try {
    ws.name = QString::fromStdString(j.value("name", QFileInfo(d).fileName().toStdString()));
    ws.modelPath = QString::fromStdString(j.value("model", std::string()));
    ws.corpusPath = QString::fromStdString(j.value("corpus", std::string()));
    if (j.contains("settings") && j["settings"].is_object()) ws.settings = j["settings"];
    for (const QString& k : kinds()) ws.folders[k.toStdString()] = k;
    if (j.contains("folders") && j["folders"].is_object())
      for (auto& [k, v] : j["folders"].items())
        if (v.is_string()) ws.folders[k] = QString::fromStdString(v.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file.toStdString() + ": " + e.what());
  }
  return ws;
}

Workspace Workspace::create(const QString& d, const QString& name, const QString& model, const QString& corpus) {
  Workspace ws;
  ws.dir = QFileInfo(d).absoluteFilePath();
  ws.name = name;
  ws.modelPath = model;
  ws.corpusPath = corpus;
  for (const QString& k : kinds()) ws.folders[k.toStdString()] = k;
  return ws;
}

nlohmann::json Workspace::toJson() const {
  nlohmann::json j;
  j["format"] = "moefy-workspace";
  j["version"] = 1;
  j["tool_version"] = MOEFY_VERSION;
  j["name"] = name.toStdString();
  j["model"] = modelPath.toStdString();
  j["corpus"] = corpusPath.toStdString();
  j["settings"] = settings;
  nlohmann::json f = nlohmann::json::object();
  for (const auto& [k, v] : folders) f[k] = v.toStdString();
  j["folders"] = f;
  return j;
}

void Workspace::save() const {
  std::filesystem::create_directories(P(dir));
  writeFileAtomic(P(QDir(dir).filePath("workspace.json")), toJson().dump(2) + "\n");
  for (const auto& [k, v] : folders) {
    std::error_code ec;
    std::filesystem::create_directories(P(resolve(v)), ec);
  }
}

std::vector<ArtefactRef> scanArtefacts(const Workspace& ws) {
  struct KindFile {
    const char* folder;
    const char* kind;
    const char* file;
  };
  static const KindFile kfs[] = {{"recordings", "recording", "manifest.json"},
                                 {"partitions", "partition", "partition.json"},
                                 {"routers", "router", "router.json"},
                                 {"evaluations", "evaluation", "eval.json"},
                                 {"exports", "export", "config.json"},
                                 {"calibrated", "export", "config.json"}};
  std::vector<ArtefactRef> out;
  for (const auto& kf : kfs) {
    QDir d(ws.folder(kf.folder));
    if (!d.exists()) continue;
    // A kind folder may itself be one artefact (the layout `moefy demo` writes:
    // DIR/recording/manifest.json) or hold one artefact per sub-folder.
    QFileInfoList entries = d.entryInfoList(QDir::Dirs | QDir::NoDotAndDotDot, QDir::Name);
    if (QFileInfo::exists(d.filePath(kf.file))) entries = {QFileInfo(d.absolutePath())};
    for (const QFileInfo& fi : entries) {
      if (fi.fileName().contains(".tmp")) continue;  // an in-progress atomic write
      QString file = QDir(fi.absoluteFilePath()).filePath(kf.file);
      if (!QFileInfo::exists(file)) continue;
      ArtefactRef r{kf.kind, fi.absoluteFilePath(), fi.fileName(), {}};
      try {
        nlohmann::json j = readJson(file);
        if (r.kind == "recording")
          r.summary = QString("%1 tokens, layers %2").arg(j.value("tokens", 0LL)).arg(QString::fromStdString(j.value("layers", nlohmann::json::array()).dump()));
        else if (r.kind == "partition")
          r.summary = QString("%1, E=%2, seed %3").arg(QString::fromStdString(j.value("method", std::string("?")))).arg(j.value("experts", 0)).arg(j.value("seed", 0));
        else if (r.kind == "router")
          r.summary = QString("%1 router, E=%2").arg(QString::fromStdString(j.value("kind", std::string("?")))).arg(j.value("experts", 0));
        else if (r.kind == "export" && j.contains("moefication") && j["moefication"].is_object()) {
          const auto& m = j["moefication"];
          r.summary = QString("MoE export, %1 router, top-k %2").arg(QString::fromStdString(m.value("router", std::string("?"))))
                          .arg(QString::fromStdString(m.value("top_k", nlohmann::json()).dump()));
          if (m.contains("calibration") && m["calibration"].is_object())
            r.summary += QString(", calibrated (%1 steps, LM loss %2 -> %3)")
                             .arg(m["calibration"].value("steps", 0))
                             .arg(m["calibration"].value("lm_loss_before", 0.0), 0, 'g', 4)
                             .arg(m["calibration"].value("lm_loss_after", 0.0), 0, 'g', 4);
        } else
          r.summary = QString::fromStdString(j.value("format", std::string(kf.file)));
      } catch (const std::exception& e) {
        r.summary = QString("unreadable: %1").arg(e.what());
      }
      out.push_back(r);
    }
  }
  return out;
}

// ---------------------------------------------------------------- Recording

std::shared_ptr<Recording> Recording::open(const QString& d) {
  auto r = std::make_shared<Recording>();
  r->dir = QFileInfo(d).absoluteFilePath();
  QString mf = QDir(d).filePath("manifest.json");
  r->manifest = readJson(mf);
  requireFormat(r->manifest, "moefy-recording", mf);
  const auto& m = r->manifest;
  try {
    r->tokens = m.value("tokens", 0LL);
    r->dFF = m.at("model").value("d_ff", 0);
    r->dModel = m.at("model").value("d_model", 0);
    r->layers = intList(m.value("layers", nlohmann::json::array()));
    if (m.contains("corpus") && m["corpus"].contains("categories"))
      for (const auto& c : m["corpus"]["categories"]) r->categories << QString::fromStdString(c.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(mf.toStdString() + ": " + e.what());
  }
  if (r->dFF <= 0) throw FormatError(mf.toStdString() + ": model.d_ff is missing or not positive");
  if (r->tokens <= 0) throw FormatError(mf.toStdString() + ": tokens is missing or not positive");
  auto stats = SafetensorsFile::open(P(QDir(d).filePath("stats.safetensors")));
  const int64_t F = r->dFF, C = r->categories.size();
  for (int L : r->layers) {
    std::string p = "blk." + std::to_string(L) + ".";
    LayerStats s;
    s.count = toVector<int64_t>(need(*stats, p + "count", {F}), at::kLong);
    std::vector<double> sum = toVector<double>(need(*stats, p + "sum", {F}), at::kDouble);
    s.mean.resize(F);
    for (int64_t i = 0; i < F; ++i) s.mean[i] = sum[i] / static_cast<double>(r->tokens);
    s.max = toVector<double>(need(*stats, p + "max", {F}), at::kDouble);
    s.activeHist = toVector<int64_t>(need(*stats, p + "active_hist", {F + 1}), at::kLong);
    if (stats->contains(p + "category_count") && C > 0) {
      s.categoryCount = toVector<int64_t>(need(*stats, p + "category_count", {C, F}), at::kLong);
      s.categoryTokens = toVector<int64_t>(need(*stats, p + "category_tokens", {C}), at::kLong);
    }
    r->stats[L] = std::move(s);
  }
  r->hasCoact_ = QFileInfo::exists(QDir(d).filePath("coact.safetensors"));
  r->hasSamples_ = QFileInfo::exists(QDir(d).filePath("samples.safetensors"));
  return r;
}

std::shared_ptr<const std::vector<int32_t>> Recording::coact(int layer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = coact_.find(layer);
  if (it != coact_.end()) return it->second;
  if (!hasCoact_) throw FormatError(dir.toStdString() + ": the recording has no coact.safetensors");
  auto f = SafetensorsFile::open(P(QDir(dir).filePath("coact.safetensors")));
  auto v = std::make_shared<const std::vector<int32_t>>(
      toVector<int32_t>(need(*f, "blk." + std::to_string(layer) + ".coact", {dFF, dFF}), at::kInt));
  coact_[layer] = v;
  return v;
}

const Recording::Samples& Recording::samples() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (samples_) return *samples_;
  Samples s;
  if (hasSamples_) {
    auto f = SafetensorsFile::open(P(QDir(dir).filePath("samples.safetensors")));
    s.tokenId = toVector<int32_t>(need(*f, "token_id", {}), at::kInt);
    const int64_t S = static_cast<int64_t>(s.tokenId.size());
    s.docId = toVector<int64_t>(need(*f, "doc_id", {S}), at::kLong);
    s.position = toVector<int32_t>(need(*f, "position", {S}), at::kInt);
    s.category = toVector<int32_t>(need(*f, "category", {S}), at::kInt);
  }
  samples_ = std::move(s);
  return *samples_;
}

std::shared_ptr<const std::vector<float>> Recording::sampleAct(int layer) const {
  const int64_t S = samples().count();
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = "blk." + std::to_string(layer) + ".ffn_act";
  auto it = sampleCache_.find(key);
  if (it != sampleCache_.end()) return it->second;
  auto f = SafetensorsFile::open(P(QDir(dir).filePath("samples.safetensors")));
  auto v = std::make_shared<const std::vector<float>>(toVector<float>(need(*f, key, {S, dFF}), at::kFloat));
  sampleCache_[key] = v;
  return v;
}

std::shared_ptr<const std::vector<float>> Recording::sampleIn(int layer) const {
  const int64_t S = samples().count();
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = "blk." + std::to_string(layer) + ".ffn_in";
  auto it = sampleCache_.find(key);
  if (it != sampleCache_.end()) return it->second;
  auto f = SafetensorsFile::open(P(QDir(dir).filePath("samples.safetensors")));
  auto v = std::make_shared<const std::vector<float>>(toVector<float>(need(*f, key, {S, dModel}), at::kFloat));
  sampleCache_[key] = v;
  return v;
}

// ---------------------------------------------------------------- Partition

std::shared_ptr<Partition> Partition::open(const QString& d) {
  auto p = std::make_shared<Partition>();
  p->dir = QFileInfo(d).absoluteFilePath();
  p->name = QFileInfo(d).fileName();
  QString pf = QDir(d).filePath("partition.json");
  p->meta = readJson(pf);
  requireFormat(p->meta, "moefy-partition", pf);
  p->method = QString::fromStdString(p->meta.value("method", std::string("?")));
  p->seed = p->meta.value("seed", 0);
  p->experts = p->meta.value("experts", 0);
  p->dFF = p->meta.value("d_ff", 0);
  if (p->experts <= 0 || p->dFF <= 0) throw FormatError(pf.toStdString() + ": experts and d_ff must be positive");
  auto f = SafetensorsFile::open(P(QDir(d).filePath("labels.safetensors")));
  for (int L : intList(p->meta.value("layers", nlohmann::json::array()))) {
    std::string pre = "blk." + std::to_string(L) + ".";
    auto lab = toVector<int32_t>(need(*f, pre + "labels", {p->dFF}), at::kInt);
    for (int32_t v : lab)
      if (v < 0 || v >= p->experts)
        throw FormatError(f->path().string() + ": tensor '" + pre + "labels' has expert id " + std::to_string(v) +
                          " outside [0, " + std::to_string(p->experts) + ")");
    auto perm = toVector<int32_t>(need(*f, pre + "perm", {p->dFF}), at::kInt);
    std::vector<char> seen(p->dFF, 0);
    for (int32_t v : perm) {
      if (v < 0 || v >= p->dFF || seen[v])
        throw FormatError(f->path().string() + ": tensor '" + pre + "perm' is not a permutation of 0..d_ff-1");
      seen[v] = 1;
    }
    p->labels[L] = std::move(lab);
    p->perm[L] = std::move(perm);
  }
  return p;
}

double Partition::metric(int layer, const std::string& key) const {
  auto m = meta.find("metrics");
  if (m == meta.end() || !m->is_object()) return std::nan("");
  auto l = m->find(std::to_string(layer));
  if (l == m->end() || !l->is_object()) return std::nan("");
  auto v = l->find(key);
  if (v == l->end() || !v->is_number()) return std::nan("");
  return v->get<double>();
}

std::vector<double> Partition::recallAtK(int layer) const {
  std::vector<double> out;
  auto m = meta.find("metrics");
  if (m == meta.end() || !m->is_object()) return out;
  auto l = m->find(std::to_string(layer));
  if (l == m->end() || !l->contains("recall_at_k")) return out;
  for (const auto& v : (*l)["recall_at_k"])
    if (v.is_number()) out.push_back(v.get<double>());
  return out;
}

std::vector<int> Partition::sizes(int layer) const {
  std::vector<int> s(experts, 0);
  auto it = labels.find(layer);
  if (it != labels.end())
    for (int32_t v : it->second) ++s[v];
  return s;
}

// ---------------------------------------------------------------- Router

std::shared_ptr<Router> Router::open(const QString& d) {
  auto r = std::make_shared<Router>();
  r->dir = QFileInfo(d).absoluteFilePath();
  r->name = QFileInfo(d).fileName();
  QString rf = QDir(d).filePath("router.json");
  r->meta = readJson(rf);
  requireFormat(r->meta, "moefy-router", rf);
  try {
    r->kind = QString::fromStdString(r->meta.value("kind", std::string("?")));
    r->layers = intList(r->meta.value("layers", nlohmann::json::array()));
    // "experts" is one count per layer (docs/formats.md); older files hold one number.
    const nlohmann::json& ex = r->meta.contains("experts") ? r->meta["experts"] : nlohmann::json(0);
    if (ex.is_array()) {
      std::vector<int> per = intList(ex);
      r->experts = per.empty() ? 0 : *std::max_element(per.begin(), per.end());
    } else if (ex.is_number_integer()) {
      r->experts = ex.get<int>();
    }
    if (r->meta.contains("top_k")) {
      if (r->meta["top_k"].is_array())
        r->topK = intList(r->meta["top_k"]);
      else if (r->meta["top_k"].is_number_integer())
        r->topK.assign(r->layers.size(), r->meta["top_k"].get<int>());
    }
    if (r->meta.contains("partition")) {
      const auto& p = r->meta["partition"];
      if (p.is_string()) r->partitionPath = QString::fromStdString(p.get<std::string>());
      else if (p.is_object()) r->partitionPath = QString::fromStdString(p.value("path", std::string()));
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(rf.toStdString() + ": " + e.what());
  }
  // A partition written inside an atomic folder write (`moefy demo` writes
  // DIR.tmp-XXXX/partitions/P, then renames DIR.tmp-XXXX to DIR) is recorded
  // with the temporary name: map it to the final folder.
  if (!r->partitionPath.isEmpty() && !QFileInfo::exists(r->partitionPath) && r->partitionPath.contains(".tmp-")) {
    QString fixed = r->partitionPath;
    fixed.replace(QRegularExpression("\\.tmp-[^/\\\\]*"), QString());
    if (QFileInfo::exists(fixed)) r->partitionPath = fixed;
  }
  QString tf = QDir(d).filePath("router.safetensors");
  if (r->kind != "oracle" && QFileInfo::exists(tf)) {
    auto f = SafetensorsFile::open(P(tf));
    for (int L : r->layers) {
      std::string pre = "blk." + std::to_string(L) + ".";
      if (const TensorInfo* c = f->find(pre + "centroids")) {
        if (c->shape.size() == 2) r->dModel = static_cast<int>(c->shape[1]);
        r->centroids[L] = toVector<float>(need(*f, pre + "centroids", {r->experts, r->dModel}), at::kFloat);
      }
      if (const TensorInfo* w = f->find(pre + "w1")) {
        if (w->shape.size() == 2) r->dModel = static_cast<int>(w->shape[1]);
        r->w1[L] = toVector<float>(need(*f, pre + "w1", {}), at::kFloat);
        if (f->contains(pre + "w2")) r->w2[L] = toVector<float>(need(*f, pre + "w2", {}), at::kFloat);
      }
    }
  }
  return r;
}

int Router::topKFor(int layer) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i] == layer && i < topK.size()) return topK[i];
  return topK.empty() ? 1 : topK.front();
}

// ---------------------------------------------------------------- Evaluation

std::shared_ptr<Evaluation> Evaluation::open(const QString& d) {
  auto e = std::make_shared<Evaluation>();
  e->dir = QFileInfo(d).absoluteFilePath();
  QString ef = QDir(d).filePath("eval.json");
  // The core reader checks the invariants (perplexity >= 1, speed-ups > 0, ...).
  e->meta = readEvalFile(P(ef));
  const double nan = std::nan("");
  auto num = [&](const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : nan;
  };
  try {
    const auto& j = e->meta;
    if (j.contains("reference") && j["reference"].is_object()) {
      e->densePpl = num(j["reference"], "perplexity");
      e->denseLoss = num(j["reference"], "loss");
    }
    std::map<QString, size_t> index;
    for (const auto& r : j.value("results", nlohmann::json::array())) {
      QString name = QString::fromStdString(r.value("router", r.value("name", std::string("router"))));
      if (!index.count(name)) {
        index[name] = e->series.size();
        e->series.push_back({name, {}});
      }
      Point p;
      p.fraction = num(r, "fraction");
      p.topK = r.contains("top_k") ? QString::fromStdString(r["top_k"].dump()) : QString();
      p.loss = num(r, "loss");
      p.ppl = num(r, "perplexity");
      p.lossDelta = num(r, "loss_delta");
      if (std::isnan(p.lossDelta) && !std::isnan(e->denseLoss)) p.lossDelta = p.loss - e->denseLoss;
      p.top1 = num(r, "top1_agreement");
      p.kl = num(r, "kl");
      p.fwdSpeedup = p.genSpeedup = nan;
      p.fwdSpeedupMin = p.fwdSpeedupMax = p.genSpeedupMin = p.genSpeedupMax = nan;
      if (r.contains("speed_note") && r["speed_note"].is_string())
        p.speedNote = QString::fromStdString(r["speed_note"].get<std::string>());
      if (r.contains("speed") && r["speed"].is_object()) {
        const auto& sp = r["speed"];
        p.fwdSpeedup = num(sp, "forward_speedup");
        p.genSpeedup = num(sp, "generate_speedup");
        p.fwdSpeedupMin = num(sp, "forward_speedup_min");
        p.fwdSpeedupMax = num(sp, "forward_speedup_max");
        p.genSpeedupMin = num(sp, "generate_speedup_min");
        p.genSpeedupMax = num(sp, "generate_speedup_max");
        const double fr = num(sp, "forward_runs"), gr = num(sp, "generate_runs");
        p.fwdRuns = std::isnan(fr) ? 0 : int(fr);
        p.genRuns = std::isnan(gr) ? 0 : int(gr);
        e->hasSpeed |= !std::isnan(p.fwdSpeedup);
        e->hasGenSpeed |= !std::isnan(p.genSpeedup);
      }
      if (std::isnan(p.fraction)) throw FormatError(ef.toStdString() + ": a result of router '" + name.toStdString() + "' has no fraction");
      e->series[index[name]].points.push_back(p);
    }
    for (auto& s : e->series)
      std::sort(s.points.begin(), s.points.end(), [](const Point& a, const Point& b) { return a.fraction < b.fraction; });
  } catch (const nlohmann::json::exception& ex) {
    throw FormatError(ef.toStdString() + ": " + ex.what());
  }
  return e;
}

// ---------------------------------------------------------------- Model

ModelSummary ModelSummary::read(const QString& dir) {
  LoadedModel m = loadModel(P(dir));
  ModelSummary s;
  s.info = describeModel(m);
  return s;
}

// ---------------------------------------------------------------- TextProbe

struct TextProbe::Impl {
  LoadedModel loaded;
};

TextProbe::~TextProbe() = default;

std::shared_ptr<TextProbe> TextProbe::open(const QString& modelDir) {
  auto p = std::shared_ptr<TextProbe>(new TextProbe);
  p->impl_ = std::make_unique<Impl>();
  p->impl_->loaded = loadModel(P(modelDir));
  if (!p->impl_->loaded.tokenizer)
    throw FormatError(modelDir.toStdString() + ": has no usable tokenizer (" + p->impl_->loaded.tokenizerError + ")");
  p->dir = modelDir;
  p->layers = p->impl_->loaded.model->config().nLayer;
  return p;
}

namespace {
class LayerCapture : public HookSink {
 public:
  explicit LayerCapture(int layer) : layer_(layer) {}
  at::Tensor in, act;  // [T, d_model], [T, d_ff]
  bool wants(int layer, HookPoint) const override { return layer == layer_; }
  void on(int, HookPoint p, const at::Tensor& x) override {
    at::Tensor t = x[0].to(at::kFloat).contiguous().clone();
    (p == HookPoint::FfnIn ? in : act) = t;
  }

 private:
  int layer_;
};
}  // namespace

TextActivations TextProbe::run(const QString& text, int layer) const {
  const Model& m = *impl_->loaded.model;
  const ModelConfig& c = m.config();
  if (layer < 0 || layer >= c.nLayer)
    throw ParameterError("layer " + std::to_string(layer) + " outside [0, " + std::to_string(c.nLayer) + ")");
  const std::string utf8 = text.toStdString();
  if (text.trimmed().isEmpty()) throw ParameterError("type a text to route");
  std::vector<int32_t> ids = impl_->loaded.tokenizer->encode(utf8, true);
  if (ids.empty()) throw ParameterError("the tokenizer produced no tokens for this text");
  const int maxLen = c.pos == PosKind::Learned && c.maxPos > 0 ? c.maxPos : 4096;
  if (static_cast<int>(ids.size()) > maxLen) ids.resize(maxLen);
  for (int32_t id : ids)
    if (id < 0 || id >= c.vocab)
      throw FormatError(dir.toStdString() + ": the tokenizer produced id " + std::to_string(id) +
                        " outside the model's vocabulary [0, " + std::to_string(c.vocab) + ")");
  LayerCapture cap(layer);
  m.forwardHidden(makeBatch({std::vector<int64_t>(ids.begin(), ids.end())}), &cap);
  if (!cap.in.defined() || !cap.act.defined())
    throw FormatError(dir.toStdString() + ": layer " + std::to_string(layer) + " reported no FFN activations");
  TextActivations out;
  out.ids = ids;
  out.dModel = static_cast<int>(cap.in.size(1));
  out.dFF = static_cast<int>(cap.act.size(1));
  out.in = toVector<float>(cap.in, at::kFloat);
  out.act = toVector<float>(cap.act, at::kFloat);
  out.reluLike = c.act == Activation::ReLU;
  return out;
}

}  // namespace moefy::views
