// `moefy inspect` on the issue-13 architectures: the stacks and FFN sites of a
// T5 (encoder-decoder) checkpoint, and the experts, shared expert and
// dense-vs-MoE layers of native MoE checkpoints (Mixtral, Qwen2-MoE), in the
// text and --json forms. The random checkpoints come from the reference
// scripts (scripts/ref/t5_ref.py, moe_native_ref.py make); every expected
// value is derived here from their config.json with the Hugging Face
// semantics of its keys, not from the engine.
#include <QtTest>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "testutil.h"

using json = nlohmann::json;
namespace fs = std::filesystem;
namespace test = moefy::test;

namespace {

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

json readJson(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

std::vector<std::string> names(const std::string& prefix, int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

// The text line that starts with `key` (inspect prints "key<padding>value").
std::string line(const std::string& out, const std::string& key) {
  size_t p = 0;
  while (p < out.size()) {
    size_t e = out.find('\n', p);
    if (e == std::string::npos) e = out.size();
    std::string l = out.substr(p, e - p);
    if (l.rfind(key, 0) == 0 && l.size() > key.size() && l[key.size()] == ' ') return l;
    p = e + 1;
  }
  return "";
}

}  // namespace

class InspectSites : public QObject {
  Q_OBJECT
  fs::path root_;

  fs::path make(const char* script, const char* variant) {
    const fs::path dir = root_ / variant;
    auto r = test::runPython(
        {qs(test::sourceDir() / "scripts" / "ref" / script), "make", QString::fromUtf8(variant), qs(dir)});
    if (r.exitCode != 0) qWarning("%s", (r.out + r.err).c_str());
    return r.exitCode == 0 ? dir : fs::path();
  }

  json inspectJson(const fs::path& dir) {
    auto r = test::runCli({"inspect", qs(dir), "--json"});
    if (r.exitCode != 0) qWarning("%s", r.err.c_str());
    return r.exitCode == 0 ? json::parse(r.out) : json();
  }

 private Q_SLOTS:
  void initTestCase() { root_ = test::freshDir("inspect_sites"); }

  // inspect reads the config and the safetensors headers only; --fingerprint
  // loads the weights and adds the model fingerprint. Both describe the same model.
  void headersOnlyUnlessFingerprint() {
    const fs::path dir = make("t5_ref.py", "t5_gated");
    QVERIFY(!dir.empty());
    const json quick = inspectJson(dir);
    auto r = test::runCli({"inspect", qs(dir), "--fingerprint", "--json"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const json full = json::parse(r.out);
    QVERIFY(!quick.contains("fingerprint"));
    QCOMPARE(full.at("fingerprint").get<std::string>().size(), size_t{16});
    for (const char* key : {"parameters", "dtype", "layers", "ffn_sites", "tokenizer", "stack_summary"})
      QVERIFY2(quick.at(key) == full.at(key), key);
    r = test::runCli({"inspect", qs(dir)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY2(r.out.find("fingerprint not computed (--fingerprint") != std::string::npos, r.out.c_str());
  }

  // T5 v1.1 style: 2 encoder blocks, 3 decoder blocks (num_decoder_layers).
  void t5Stacks() {
    const fs::path dir = make("t5_ref.py", "t5_gated");
    QVERIFY(!dir.empty());
    const json cfg = readJson(dir / "config.json");
    const int enc = cfg.at("num_layers").get<int>();
    const int dec = cfg.value("num_decoder_layers", enc);
    QVERIFY(enc != dec);  // the fixture tells the stacks apart
    const json j = inspectJson(dir);
    QVERIFY(!j.is_null());
    QCOMPARE(j.at("layers").get<int>(), enc);
    QCOMPARE(j.at("decoder_layers").get<int>(), dec);
    const json& st = j.at("stacks");
    QCOMPARE(st.size(), size_t{2});
    QCOMPARE(st[0].at("stack").get<std::string>(), std::string("encoder"));
    QCOMPARE(st[0].at("layers").get<int>(), enc);
    QCOMPARE(st[0].at("site_prefix").get<std::string>(), std::string("enc.blk"));
    QCOMPARE(st[1].at("stack").get<std::string>(), std::string("decoder"));
    QCOMPARE(st[1].at("layers").get<int>(), dec);
    QCOMPARE(st[1].at("site_prefix").get<std::string>(), std::string("dec.blk"));
    std::vector<std::string> want = names("enc.blk.", enc);
    for (const auto& s : names("dec.blk.", dec)) want.push_back(s);
    QCOMPARE(j.at("ffn_sites").get<std::vector<std::string>>(), want);
    QVERIFY(!j.contains("native_moe"));  // T5 has no native experts
    const std::string summary = "encoder: " + std::to_string(enc) + " layers, enc.blk.0-" + std::to_string(enc - 1) +
                                "; decoder: " + std::to_string(dec) + " layers, dec.blk.0-" + std::to_string(dec - 1);
    QCOMPARE(j.at("stack_summary").get<std::string>(), summary);

    auto r = test::runCli({"inspect", qs(dir)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo("%s", r.out.c_str());
    QCOMPARE(line(r.out, "stacks"), "stacks      " + summary);
    QCOMPARE(line(r.out, "layers"),
             "layers      " + std::to_string(enc) + " encoder + " + std::to_string(dec) + " decoder");
    QCOMPARE(line(r.out, "experts"), std::string("experts     none"));
    QCOMPARE(line(r.out, "moe"), std::string());  // no moe layers line without native experts
  }

  // Mixtral: every layer a MoE block, softmax then top-k renormalised, no shared expert.
  void mixtralExperts() {
    const fs::path dir = make("moe_native_ref.py", "mixtral");
    QVERIFY(!dir.empty());
    const json cfg = readJson(dir / "config.json");
    const int L = cfg.at("num_hidden_layers").get<int>();
    const int E = cfg.at("num_local_experts").get<int>();
    const int k = cfg.at("num_experts_per_tok").get<int>();
    const int dExpert = cfg.at("intermediate_size").get<int>();
    const json j = inspectJson(dir);
    QVERIFY(!j.is_null());
    QCOMPARE(j.at("stacks").size(), size_t{1});
    QCOMPARE(j.at("stacks")[0].at("stack").get<std::string>(), std::string("single"));
    QCOMPARE(j.at("stacks")[0].at("layers").get<int>(), L);
    QCOMPARE(j.at("ffn_sites").get<std::vector<std::string>>(), names("blk.", L));
    const json& m = j.at("native_moe");
    QCOMPARE(m.at("experts").get<int>(), E);
    QCOMPARE(m.at("experts_per_token").get<int>(), k);
    QCOMPARE(m.at("expert_d_ff").get<int>(), dExpert);
    QCOMPARE(m.at("norm_topk_prob").get<bool>(), true);  // Mixtral always renormalises the top-k
    QCOMPARE(m.at("shared_expert_d_ff").get<int>(), 0);
    std::vector<int> all;
    for (int l = 0; l < L; ++l) all.push_back(l);
    QCOMPARE(m.at("moe_layers").get<std::vector<int>>(), all);
    QVERIFY(m.at("dense_layers").empty());
    for (int l = 0; l < L; ++l)
      QCOMPARE(m.at("expert_sites").at("blk." + std::to_string(l)).get<std::vector<std::string>>(),
               names("blk." + std::to_string(l) + ".exp.", E));
    auto r = test::runCli({"inspect", qs(dir)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo("%s", r.out.c_str());
    QCOMPARE(line(r.out, "stacks"),
             "stacks      single: " + std::to_string(L) + " layers, blk.0-" + std::to_string(L - 1));
    const std::string experts = line(r.out, "experts");
    QVERIFY2(experts.find(std::to_string(E) + " experts x " + std::to_string(dExpert) + ", top-" + std::to_string(k) +
                          " renormalised") != std::string::npos,
             experts.c_str());
    QVERIFY2(experts.find("shared") == std::string::npos, experts.c_str());
    std::string moeSites;
    for (int l = 0; l < L; ++l) moeSites += (l ? ", blk." : "blk.") + std::to_string(l);
    QCOMPARE(line(r.out, "moe layers"),
             "moe layers  MoE " + moeSites + " (sites blk.L.exp.0-" + std::to_string(E - 1) + ")");
  }

  // Qwen2-MoE: mlp_only_layers makes a dense layer among MoE ones; a shared
  // expert; norm_topk_prob false.
  void qwenSharedAndDenseLayers() {
    const fs::path dir = make("moe_native_ref.py", "qwen2_moe");
    QVERIFY(!dir.empty());
    const json cfg = readJson(dir / "config.json");
    const int L = cfg.at("num_hidden_layers").get<int>();
    const int E = cfg.at("num_experts").get<int>();
    const int step = cfg.value("decoder_sparse_step", 1);
    const auto only = cfg.value("mlp_only_layers", std::vector<int>{});
    const int shared = cfg.at("shared_expert_intermediate_size").get<int>();
    const int dFF = cfg.at("intermediate_size").get<int>();
    // HF Qwen2MoeDecoderLayer: a sparse block when the layer is not in
    // mlp_only_layers, num_experts > 0 and (layer + 1) % decoder_sparse_step == 0.
    std::vector<int> moe, dense;
    for (int l = 0; l < L; ++l)
      (std::find(only.begin(), only.end(), l) == only.end() && (l + 1) % step == 0 ? moe : dense).push_back(l);
    QVERIFY(!dense.empty() && !moe.empty());
    const json j = inspectJson(dir);
    QVERIFY(!j.is_null());
    const json& m = j.at("native_moe");
    QCOMPARE(m.at("moe_layers").get<std::vector<int>>(), moe);
    QCOMPARE(m.at("dense_layers").get<std::vector<int>>(), dense);
    QCOMPARE(m.at("shared_expert_d_ff").get<int>(), shared);
    QCOMPARE(m.at("norm_topk_prob").get<bool>(), cfg.value("norm_topk_prob", false));
    for (int l : moe) {
      std::vector<std::string> want = names("blk." + std::to_string(l) + ".exp.", E);
      want.push_back("blk." + std::to_string(l) + ".shared");
      QCOMPARE(m.at("expert_sites").at("blk." + std::to_string(l)).get<std::vector<std::string>>(), want);
    }
    for (int l : dense) QVERIFY(!m.at("expert_sites").contains("blk." + std::to_string(l)));
    auto r = test::runCli({"inspect", qs(dir)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo("%s", r.out.c_str());
    std::string moeSites, denseSites;
    for (int l : moe) moeSites += (moeSites.empty() ? "blk." : ", blk.") + std::to_string(l);
    for (int l : dense) denseSites += (denseSites.empty() ? "blk." : ", blk.") + std::to_string(l);
    QCOMPARE(line(r.out, "moe layers"), "moe layers  MoE " + moeSites + " (sites blk.L.exp.0-" + std::to_string(E - 1) +
                                            ", blk.L.shared); dense " + denseSites + " (d_ff " + std::to_string(dFF) +
                                            ")");
    const std::string experts = line(r.out, "experts");
    QVERIFY2(experts.find("shared expert " + std::to_string(shared)) != std::string::npos, experts.c_str());
    QVERIFY2(experts.find("(softmax probabilities)") != std::string::npos, experts.c_str());  // not renormalised
  }

  // A dense single-stack model (LLaMA): one "single" stack of blk.L, no
  // native_moe block, no moe layers line, and the lines it always had.
  void denseSingleStack() {
    const fs::path dir = root_ / "llama";
    auto mk =
        test::runPython({qs(test::sourceDir() / "scripts" / "ref" / "make_checkpoint.py"), "llama_silu", qs(dir)});
    QVERIFY2(mk.exitCode == 0, (mk.out + mk.err).c_str());
    const json cfg = readJson(dir / "config.json");
    const int n = cfg.at("num_hidden_layers").get<int>();
    const json j = inspectJson(dir);
    QVERIFY(!j.is_null());
    QCOMPARE(j.at("layers").get<int>(), n);
    QVERIFY(!j.contains("decoder_layers"));
    QVERIFY(!j.contains("native_moe"));
    QCOMPARE(j.at("stacks").size(), size_t{1});
    QCOMPARE(j.at("stacks")[0].at("site_prefix").get<std::string>(), std::string("blk"));
    QCOMPARE(j.at("ffn_sites").get<std::vector<std::string>>(), names("blk.", n));
    auto r = test::runCli({"inspect", qs(dir)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QCOMPARE(line(r.out, "stacks"),
             "stacks      single: " + std::to_string(n) + " layers, blk.0-" + std::to_string(n - 1));
    QCOMPARE(line(r.out, "layers"), "layers      " + std::to_string(n));
    QCOMPARE(line(r.out, "experts"), std::string("experts     none"));
    QCOMPARE(line(r.out, "moe"), std::string());
  }
};

QTEST_GUILESS_MAIN(InspectSites)
#include "test_inspect_sites.moc"
