// Native MoE decoders (Mixtral, Qwen2-MoE, OLMoE) against the independent
// float64 numpy reference scripts/ref/moe_native_ref.py, on small random
// checkpoints it builds (HF names, shapes and config keys; router weights
// large enough that every top-k choice has a margin of >= 1e-3 in router
// logits, which the reference checks): `moefy forward --dump` on a
// right-padded batch of two sequences; logits and every hook (ffn_in,
// ffn_act, router_logits, topk_ids, topk_weights, exp.E.ffn_in/ffn_act with its
// token positions, shared.ffn_act) compared on the non-padded positions at
// 1e-4 (F32), printing the max difference of every tensor. The every-expert
// mode (--all-experts) against the reference's, with logits bit-identical to
// the normal run. Plus a BF16 file against its F32 upcast, the engine API and
// the refusals: a missing expert, an expert of the wrong shape, top-k > the
// expert count, clip_qkv, a dense MLP tensor in a MoE layer. All python work
// runs in one scripts/ref/batch.py call.
#include <QtTest>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

namespace {

const QString kSeqA = "5,17,3,99,42,7,1,64,23,11";
const QString kSeqB = "8,9,10,11,100,1";
const std::vector<int64_t> kLens = {10, 6};
const int64_t kT = 10;  // padded length

QString script(const char* name) { return QString::fromStdString((sourceDir() / "scripts" / "ref" / name).string()); }
QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

QStringList forwardArgs(const fs::path& dir) { return {"forward", qs(dir), "--ids", kSeqA, "--ids", kSeqB}; }

struct Row {
  const char* variant;
  const char* dtype;
};
const Row kRows[] = {{"mixtral", "F32"}, {"mixtral_window", "F32"},  {"qwen2_moe", "F32"},  {"qwen2_moe_step2", "F32"},
                     {"olmoe", "F32"},   {"olmoe_norm_bias", "F32"}, {"qwen2_moe", "BF16"}, {"mixtral", "F16"}};

std::string rowDir(const Row& r) { return std::string(r.variant) + "_" + r.dtype; }
bool isF32(const Row& r) { return std::string(r.dtype) == "F32"; }

bool endsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Max |a - b| over the non-padded positions of [B, T, ...] tensors.
double maxDiffValid(const at::Tensor& a, const at::Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.size(0); ++i) {
    at::Tensor d = (a[i].narrow(0, 0, kLens[i]).to(at::kDouble) - b[i].narrow(0, 0, kLens[i]).to(at::kDouble)).abs();
    if (d.numel()) m = std::max(m, d.max().item<double>());
  }
  return std::isnan(m) ? std::numeric_limits<double>::infinity() : m;
}

// The rows of an expert's hidden [n, F] whose flat positions b * T + t are
// not padding, with those positions.
std::pair<std::vector<int64_t>, at::Tensor> validExpertRows(const at::Tensor& tokens, const at::Tensor& hidden) {
  std::vector<int64_t> keep, positions;
  auto acc = tokens.to(at::kLong).contiguous();
  const int64_t* p = acc.data_ptr<int64_t>();
  for (int64_t i = 0; i < acc.numel(); ++i)
    if (p[i] % kT < kLens[p[i] / kT]) keep.push_back(i), positions.push_back(p[i]);
  at::Tensor idx = at::tensor(keep, at::kLong);
  return {positions, keep.empty() ? hidden.narrow(0, 0, 0) : hidden.index_select(0, idx)};
}

// Compares every tensor of `want` with `got` (same names), printing each max
// difference; topk_ids and the expert token lists must match exactly on the
// non-padded positions.
double compareDumps(const fs::path& gotPath, const fs::path& wantPath, double tol, const QString& what) {
  auto got = SafetensorsFile::open(gotPath);
  auto want = SafetensorsFile::open(wantPath);
  std::vector<std::string> gotNames, wantNames;
  for (const auto& t : got->tensors()) gotNames.push_back(t.name);
  for (const auto& t : want->tensors()) wantNames.push_back(t.name);
  std::sort(gotNames.begin(), gotNames.end());
  std::sort(wantNames.begin(), wantNames.end());
  if (gotNames != wantNames) {
    std::string g, w;
    for (const auto& n : gotNames) g += n + " ";
    for (const auto& n : wantNames) w += n + " ";
    QTest::qFail(("tensor names differ: moefy [" + g + "] reference [" + w + "]").c_str(), __FILE__, __LINE__);
    return 1e9;
  }
  double overall = 0;
  for (const auto& name : wantNames) {
    if (endsWith(name, ".tokens")) continue;  // compared with their ffn_act
    at::Tensor g = got->raw(name), w = want->raw(name);
    double d = 0;
    if (name.find(".exp.") != std::string::npos) {
      // blk.L.exp.E.ffn_act and .ffn_in: rows of the tokens blk.L.exp.E.tokens lists.
      const std::string base = name.substr(0, name.rfind('.') + 1);
      auto [gp, gh] = validExpertRows(got->raw(base + "tokens"), g);
      auto [wp, wh] = validExpertRows(want->raw(base + "tokens"), w);
      if (gp != wp) {
        QTest::qFail(
            (what.toStdString() + ": " + base + "tokens: moefy routed other tokens than the reference").c_str(),
            __FILE__, __LINE__);
        return 1e9;
      }
      if (gh.sizes() != wh.sizes()) {
        QTest::qFail((name + ": shape " + shapeString(gh) + " vs " + shapeString(wh)).c_str(), __FILE__, __LINE__);
        return 1e9;
      }
      d = gh.numel() ? (gh.to(at::kDouble) - wh.to(at::kDouble)).abs().max().item<double>() : 0.0;
      if (std::isnan(d)) d = std::numeric_limits<double>::infinity();
      qInfo("%s: %-26s %4zu tokens      max abs diff %.3g%s", qPrintable(what), name.c_str(), gp.size(), d,
            d > tol ? "  > tolerance" : "");
    } else {
      if (g.sizes() != w.sizes()) {
        QTest::qFail((name + ": shape " + shapeString(g) + " vs " + shapeString(w)).c_str(), __FILE__, __LINE__);
        return 1e9;
      }
      d = maxDiffValid(g, w);
      if (endsWith(name, "topk_ids") && d != 0) {
        QTest::qFail((what.toStdString() + ": " + name + ": moefy chose other experts than the reference").c_str(),
                     __FILE__, __LINE__);
        return 1e9;
      }
      qInfo("%s: %-26s %-14s max abs diff %.3g%s", qPrintable(what), name.c_str(), shapeString(w).c_str(), d,
            d > tol ? "  > tolerance" : "");
    }
    overall = std::max(overall, d);
  }
  return overall;
}

// A failing CLI run: non-zero exit, one line on stderr containing every needle.
void expectOneLineError(const QStringList& args, const std::vector<std::string>& needles) {
  auto r = runCli(args, 120);
  QVERIFY2(r.exitCode > 0, ("exit " + std::to_string(r.exitCode) + " (crash or success): " + r.out + r.err).c_str());
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  QVERIFY2(!err.empty(), "no error message");
  QVERIFY2(err.find('\n') == std::string::npos, ("more than one line: " + r.err).c_str());
  for (const auto& n : needles) QVERIFY2(err.find(n) != std::string::npos, ("'" + n + "' not in: " + err).c_str());
  qInfo("%s -> %s", qPrintable(args.front()), err.c_str());
}

// Copies a checkpoint folder, keeping the tensors `keep` accepts, replacing
// those `edit` returns a defined tensor for, and editing config.json.
void rewriteCheckpoint(const fs::path& from, const fs::path& to, const std::function<bool(const std::string&)>& keep,
                       const std::function<at::Tensor(const std::string&, const at::Tensor&)>& edit = nullptr,
                       const std::function<void(nlohmann::json&)>& editConfig = nullptr) {
  fs::create_directories(to);
  std::ifstream in(from / "config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  if (editConfig) editConfig(cfg);
  std::ofstream(to / "config.json") << cfg.dump(2);
  auto st = SafetensorsFile::open(from / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& info : st->tensors()) {
    if (!keep(info.name)) continue;
    at::Tensor t = st->f32(info.name).clone();
    if (edit) {
      at::Tensor e = edit(info.name, t);
      if (e.defined()) t = e;
    }
    out.emplace_back(info.name, t);
  }
  writeSafetensors(to / "model.safetensors", out, {{"format", "pt"}});
}

const auto kAll = [](const std::string&) { return true; };

}  // namespace

class MoeNativeForward : public QObject {
  Q_OBJECT
  fs::path root_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("moe_native_forward");
    nlohmann::json jobs = nlohmann::json::array();
    for (const auto& r : kRows) {
      auto d = root_ / rowDir(r);
      jobs.push_back({"make_checkpoint", r.variant, (d / "model").string(), "--dtype", r.dtype});
      nlohmann::json fwd = {
          "moe_native_ref",    "forward", (d / "model").string(),          "--ids", kSeqA.toStdString(), "--ids",
          kSeqB.toStdString(), "--out",   (d / "ref.safetensors").string()};
      jobs.push_back(fwd);
      if (isF32(r)) {
        fwd[8] = (d / "ref_all.safetensors").string();
        fwd.push_back("--all-experts");
        jobs.push_back(fwd);
      }
    }
    // A half-precision file runs exactly like the F32 file of its upcast values.
    jobs.push_back({"make_checkpoint", "qwen2_moe", (root_ / "upcast" / "f32").string(), "--round-to", "BF16"});
    jobs.push_back({"make_checkpoint", "gpt2_relu", (root_ / "gpt2").string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({script("batch.py"), qs(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
  }

  void matchesReference_data() {
    QTest::addColumn<QString>("dir");
    for (const auto& r : kRows) QTest::newRow(rowDir(r).c_str()) << QString::fromStdString(rowDir(r));
  }

  void matchesReference() {
    QFETCH(QString, dir);
    const fs::path d = root_ / dir.toStdString();
    auto args = forwardArgs(d / "model");
    args << "--dump" << qs(d / "moefy.safetensors");
    auto r = runCli(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const double diff = compareDumps(d / "moefy.safetensors", d / "ref.safetensors", 1e-4, dir);
    qInfo("%s: max abs diff over logits and hooks %.3g", qPrintable(dir), diff);
    QVERIFY2(diff <= 1e-4, qPrintable(QString("max abs diff %1 > 1e-4").arg(diff)));
  }

  // --all-experts: every expert's hidden for every token, as the reference's;
  // the logits and the routing hooks bit-identical to the normal run.
  void allExpertsMatchesReference_data() {
    QTest::addColumn<QString>("dir");
    for (const auto& r : kRows)
      if (isF32(r)) QTest::newRow(rowDir(r).c_str()) << QString::fromStdString(rowDir(r));
  }

  void allExpertsMatchesReference() {
    QFETCH(QString, dir);
    const fs::path d = root_ / dir.toStdString();
    auto args = forwardArgs(d / "model");
    args << "--all-experts"
         << "--dump" << qs(d / "moefy_all.safetensors");
    auto r = runCli(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const double diff = compareDumps(d / "moefy_all.safetensors", d / "ref_all.safetensors", 1e-4, dir + " all");
    QVERIFY2(diff <= 1e-4, qPrintable(QString("max abs diff %1 > 1e-4").arg(diff)));
    if (!fs::exists(d / "moefy.safetensors")) {
      auto n = forwardArgs(d / "model");
      n << "--dump" << qs(d / "moefy.safetensors");
      QVERIFY(runCli(n).exitCode == 0);
    }
    auto normal = SafetensorsFile::open(d / "moefy.safetensors");
    auto every = SafetensorsFile::open(d / "moefy_all.safetensors");
    int compared = 0;
    for (const auto& info : normal->tensors()) {
      const std::string& n = info.name;
      const bool routing = n == "logits" || endsWith(n, "router_logits") || endsWith(n, "topk_ids") ||
                           endsWith(n, "topk_weights") || endsWith(n, "shared.ffn_act") ||
                           (endsWith(n, "ffn_in") && n.find(".exp.") == std::string::npos);
      if (!routing) continue;
      QVERIFY2(at::equal(normal->raw(n), every->raw(n)), (n + " differs in every-expert mode").c_str());
      ++compared;
    }
    qInfo("%s: %d tensors bit-identical with and without --all-experts", qPrintable(dir), compared);
    QVERIFY(compared > 3);
  }

  void halfMatchesUpcast() {
    const fs::path half = root_ / "qwen2_moe_BF16";
    if (!fs::exists(half / "moefy.safetensors")) {
      auto n = forwardArgs(half / "model");
      n << "--dump" << qs(half / "moefy.safetensors");
      QVERIFY(runCli(n).exitCode == 0);
    }
    auto args = forwardArgs(root_ / "upcast" / "f32");
    args << "--dump" << qs(root_ / "upcast" / "f32.safetensors");
    auto r = runCli(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    auto a = SafetensorsFile::open(half / "moefy.safetensors");
    auto b = SafetensorsFile::open(root_ / "upcast" / "f32.safetensors");
    for (const auto& info : a->tensors())
      QVERIFY2(at::equal(a->raw(info.name), b->raw(info.name)), (info.name + ": BF16 file != its F32 upcast").c_str());
  }

  // The engine API: config, sites and their weights, tensor names, and what a
  // sink written for dense single-stack models sees of a MoE model.
  void engineApi() {
    auto q = Model::load(root_ / "qwen2_moe_F32" / "model");
    const ModelConfig& c = q->config();
    QCOMPARE(c.expertCount, 4);
    QCOMPARE(c.expertTopK, 2);
    QCOMPARE(c.dExpert, 32);
    QCOMPARE(c.dShared, 48);
    QVERIFY(!c.normTopK);
    QVERIFY(c.moeLayer(0) && !c.moeLayer(1) && c.moeLayer(2) && c.moeLayer(3));
    QCOMPARE(QString::fromStdString(c.moeSummary()).contains("layers MDMM"), true);
    FfnWeights e = q->ffnWeights(Site::parse("blk.2.exp.3"));
    QVERIFY(e.gated());
    QCOMPARE(e.up.size(0), int64_t(32));
    QCOMPARE(e.down.size(1), int64_t(32));
    FfnWeights s = q->ffnWeights(Site::parse("blk.0.shared"));
    QCOMPARE(s.gate.size(0), int64_t(48));
    FfnWeights dense = q->ffnWeights(Site::parse("blk.1"));
    QCOMPARE(dense.up.size(0), int64_t(80));
    bool threw = false;
    try {
      q->ffnWeights(0);
    } catch (const ParameterError& err) {
      threw = std::string(err.what()).find("blk.0.exp.E") != std::string::npos;
    }
    QVERIFY(threw);
    threw = false;
    try {
      q->ffnWeights(Site::parse("blk.1.exp.0"));  // a dense layer has no experts
    } catch (const ParameterError&) {
      threw = true;
    }
    QVERIFY(threw);
    auto m = Model::load(root_ / "mixtral_F32" / "model");
    QCOMPARE(QString::fromStdString(m->tensorName(Role::ExpGate, 1, SiteStack::Single, 3)),
             QString("model.layers.1.block_sparse_moe.experts.3.w1.weight"));
    QVERIFY(m->config().normTopK);
    auto o = Model::load(root_ / "olmoe_F32" / "model");
    QVERIFY(o->config().qkNorm == QkNorm::Full);
    // A layer-keyed sink sees blk.L.ffn_in / ffn_act only: [B, T, E * d_expert] on MoE layers.
    struct LayerSink : HookSink {
      std::map<std::string, std::vector<int64_t>> shapes;
      bool wants(int, HookPoint) const override { return true; }
      void on(int layer, HookPoint p, const at::Tensor& x) override { shapes[hookName(layer, p)] = x.sizes().vec(); }
    } sink;
    q->forward(makeBatch({{5, 6, 7}}), &sink);
    QCOMPARE(static_cast<int>(sink.shapes.size()), 8);
    QVERIFY((sink.shapes["blk.0.ffn_act"] == std::vector<int64_t>{1, 3, 4 * 32}));
    QVERIFY((sink.shapes["blk.1.ffn_act"] == std::vector<int64_t>{1, 3, 80}));
  }

  void inspectShowsExperts() {
    auto r = runCli({"inspect", qs(root_ / "qwen2_moe_F32" / "model"), "--json"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    auto j = nlohmann::json::parse(r.out);
    QVERIFY2(j.contains("native_moe"), r.out.c_str());
    QCOMPARE(j["native_moe"]["experts"].get<int>(), 4);
    QCOMPARE(j["native_moe"]["experts_per_token"].get<int>(), 2);
    QCOMPARE(j["native_moe"]["shared_expert_d_ff"].get<int>(), 48);
    QVERIFY(j["native_moe"]["dense_layers"] == nlohmann::json::array({1}));
    QVERIFY(j["native_moe"]["moe_layers"] == nlohmann::json::array({0, 2, 3}));
    auto text = runCli({"inspect", qs(root_ / "mixtral_F32" / "model")});
    QVERIFY2(text.exitCode == 0 && text.out.find("4 experts x 48, top-2 renormalised") != std::string::npos,
             text.out.c_str());
  }

  void refusals() {
    const fs::path q = root_ / "qwen2_moe_F32" / "model";
    const fs::path mx = root_ / "mixtral_F32" / "model";
    // record records native MoE models (tests/numeric/test_moe_native_record.cpp); an expert the
    // model lacks is refused by name, before reading the corpus.
    expectOneLineError({"record", qs(mx), qs(root_ / "no_such_corpus.txt"), "--sites", "blk.0.exp.9", "--out",
                        qs(root_ / "bad" / "rec"), "--quiet"},
                       {"--sites", "has no FFN site blk.0.exp.9", "blk.L.exp.0..blk.L.exp.3"});
    QVERIFY(!fs::exists(root_ / "bad" / "rec"));
    // One expert missing.
    const char* missing = "model.layers.2.mlp.experts.3.up_proj.weight";
    const fs::path noExpert = root_ / "bad" / "missing_expert";
    rewriteCheckpoint(q, noExpert, [&](const std::string& n) { return n != missing; });
    expectOneLineError({"forward", qs(noExpert), "--ids", kSeqA},
                       {"model.safetensors", std::string("missing tensor '") + missing + "'"});
    // An expert of the wrong shape.
    const char* wrong = "model.layers.1.block_sparse_moe.experts.2.w2.weight";
    const fs::path badShape = root_ / "bad" / "expert_shape";
    rewriteCheckpoint(mx, badShape, kAll, [&](const std::string& n, const at::Tensor& t) {
      return n == wrong ? t.narrow(1, 0, 40).contiguous() : at::Tensor();
    });
    expectOneLineError({"inspect", qs(badShape)}, {wrong, "[64, 40]", "[64, 48]"});
    // top-k above the expert count names both keys.
    const fs::path topk = root_ / "bad" / "topk";
    rewriteCheckpoint(mx, topk, kAll, nullptr, [](nlohmann::json& j) { j["num_experts_per_tok"] = 5; });
    expectOneLineError({"forward", qs(topk), "--ids", kSeqA},
                       {"config.json", "num_experts_per_tok", "num_local_experts"});
    const fs::path topkQ = root_ / "bad" / "topk_qwen";
    rewriteCheckpoint(q, topkQ, kAll, nullptr, [](nlohmann::json& j) { j["num_experts_per_tok"] = 9; });
    expectOneLineError({"inspect", qs(topkQ)}, {"num_experts_per_tok", "num_experts (4)"});
    // OLMoE's clip_qkv is refused by name.
    const fs::path clip = root_ / "bad" / "clip";
    rewriteCheckpoint(root_ / "olmoe_F32" / "model", clip, kAll, nullptr,
                      [](nlohmann::json& j) { j["clip_qkv"] = 8.0; });
    expectOneLineError({"inspect", qs(clip)}, {"clip_qkv"});
    // A dense MLP tensor in a MoE layer (a layer listed in mlp_only_layers by mistake, or a stray one).
    const fs::path stray = root_ / "bad" / "stray_dense";
    rewriteCheckpoint(q, stray, kAll, nullptr,
                      [](nlohmann::json& j) { j["mlp_only_layers"] = nlohmann::json::array(); });
    expectOneLineError({"inspect", qs(stray)}, {"unexpected tensor 'model.layers.1.mlp.gate_proj.weight'", "MoE"});
    // --all-experts on a dense model.
    expectOneLineError({"forward", qs(root_ / "gpt2"), "--ids", kSeqA, "--all-experts"},
                       {"--all-experts", "not a native MoE model"});
  }
};

QTEST_GUILESS_MAIN(MoeNativeForward)
#include "test_moe_native_forward.moc"
