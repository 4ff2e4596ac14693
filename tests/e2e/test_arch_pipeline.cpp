// record -> split -> route -> export -> reload -> eval through the CLI on one
// small random checkpoint of each newer dense family (issue 14): Llama 3 RoPE,
// Qwen3, Gemma, Gemma2, Gemma3, Phi-3 (fused tensors) and OLMo 2. Gated FFNs
// record with the documented default activity rule, top:0.1 (the manifest
// says so); the MoE with every expert selected reproduces the dense logits.
#include <QtTest>

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/io/safetensors.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

const char* const kVariants[] = {"llama_llama3", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2"};
// Recorded only, for the default activity rule of a gated ReLU FFN and a plain ReLU one.
const char* const kRuleVariants[] = {"llama_relu", "gpt2_relu"};

// options.active of a recording's manifest.json.
json recordedRule(const fs::path& rec) {
  std::ifstream f(rec / "manifest.json");
  if (!f) return json();
  return json::parse(f)["options"]["active"];
}

}  // namespace

class ArchPipeline : public QObject {
  Q_OBJECT
  fs::path root_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = test::freshDir("arch_pipeline");
    json jobs = json::array();
    for (const char* v : kVariants) jobs.push_back({"make_checkpoint", v, (root_ / v / "model").string()});
    for (const char* v : kRuleVariants) jobs.push_back({"make_checkpoint", v, (root_ / v / "model").string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = test::runPython({q(test::sourceDir() / "scripts" / "ref" / "batch.py"), q(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    // 48 pre-tokenised sequences of 16 ids (vocab 101) for record, and 6 lines for eval.
    r = test::runPython({"-c",
                         "import sys; sys.path.insert(0, sys.argv[1]); import st_io, numpy as np\n"
                         "rng = np.random.RandomState(7)\n"
                         "st_io.write(sys.argv[2], [('token_ids', 'I64', rng.randint(0, 101, size=(48, 16)).astype(np.int64))])\n"
                         "open(sys.argv[3], 'w').write(''.join(' '.join(map(str, rng.randint(0, 101, size=12))) + '\\n' for _ in range(6)))\n",
                         q(test::sourceDir() / "scripts" / "ref"), q(root_ / "corpus.safetensors"), q(root_ / "held.ids")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
  }

  void pipeline_data() {
    QTest::addColumn<QString>("variant");
    for (const char* v : kVariants) QTest::newRow(v) << QString(v);
  }

  void pipeline() {
    QFETCH(QString, variant);
    const fs::path d = root_ / variant.toStdString();
    auto cli = [&](const QStringList& args) {
      auto r = test::runCli(args);
      if (r.exitCode != 0) qWarning("moefy %s: exit %d: %s", qPrintable(args.join(' ')), r.exitCode, r.err.c_str());
      return r;
    };
    QCOMPARE(cli({"record", q(d / "model"), q(root_ / "corpus.safetensors"), "--out", q(d / "rec"), "--seq-len", "16",
                  "--samples", "256", "--quiet"}).exitCode, 0);
    // Every family here has a gated FFN: the default rule is top:0.1 (docs/recording-and-splitting.md).
    const json rule = recordedRule(d / "rec");
    qInfo("%s: recorded activity rule %s", qPrintable(variant), rule.dump().c_str());
    QVERIFY2(rule.is_object(), rule.dump().c_str());
    QCOMPARE(QString::fromStdString(rule.value("rule", std::string())), QString("top_p"));
    QCOMPARE(rule.value("p", 0.0), 0.1);
    QCOMPARE(cli({"split", q(d / "rec"), "--method", "coact", "--experts", "4", "--no-stability", "--out", q(d / "part"),
                  "--quiet"}).exitCode, 0);
    QCOMPARE(cli({"route", q(d / "model"), q(d / "rec"), q(d / "part"), "--router", "mlp", "--epochs", "2", "--top-k",
                  "4", "--out", q(d / "router"), "--quiet"}).exitCode, 0);
    QCOMPARE(cli({"export", q(d / "model"), q(d / "part"), q(d / "router"), "--out", q(d / "moe"), "--quiet"}).exitCode, 0);
    // Reloaded MoE with all 4 experts selected vs the dense model: logits and hooks.
    const QStringList ids{"--ids", "5,17,3,99,42,7,1,64,23", "--ids", "8,9,10,11,100"};
    QCOMPARE(cli(QStringList{"forward", q(d / "model")} + ids + QStringList{"--dump", q(d / "dense.safetensors")}).exitCode, 0);
    QCOMPARE(cli(QStringList{"forward", q(d / "moe")} + ids + QStringList{"--dump", q(d / "moe.safetensors")}).exitCode, 0);
    auto a = SafetensorsFile::open(d / "dense.safetensors");
    auto b = SafetensorsFile::open(d / "moe.safetensors");
    double worst = 0;
    for (const auto& info : a->tensors()) {
      QVERIFY2(b->contains(info.name), info.name.c_str());
      at::Tensor x = a->f32(info.name), y = b->f32(info.name);
      // Only the non-padded positions of the second sequence count.
      double m = std::max((x[0] - y[0]).abs().max().item<double>(),
                          (x[1].narrow(0, 0, 5) - y[1].narrow(0, 0, 5)).abs().max().item<double>());
      worst = std::max(worst, m);
    }
    qInfo("%s: MoE (4 of 4 experts) vs dense, max abs diff over logits and hooks %.3g", qPrintable(variant), worst);
    QVERIFY(worst < 1e-4);
    // eval through the export: top-1 agreement 1 and KL ~ 0.
    auto ev = cli({"eval", q(d / "model"), q(root_ / "held.ids"), "--moe", q(d / "moe"), "--json"});
    QCOMPARE(ev.exitCode, 0);
    auto j = json::parse(ev.out);
    const auto& r0 = j["results"][0];
    qInfo("%s: eval loss %.6f (dense %.6f), kl %.3g, top1 %.3f", qPrintable(variant), r0["loss"].get<double>(),
          j["reference"]["loss"].get<double>(), r0["kl"].get<double>(), r0["top1_agreement"].get<double>());
    QCOMPARE(r0["top1_agreement"].get<double>(), 1.0);
    QVERIFY(std::abs(r0["kl"].get<double>()) < 1e-6);
    QVERIFY(std::abs(r0["loss"].get<double>() - j["reference"]["loss"].get<double>()) < 1e-5);
  }

  // The documented defaults: top:0.1 for every gated FFN, ReLU included; positive for a plain ReLU FFN.
  void defaultActivityRule_data() {
    QTest::addColumn<QString>("variant");
    QTest::addColumn<QString>("rule");
    QTest::addColumn<double>("p");
    QTest::newRow("gated relu (llama_relu)") << "llama_relu"
                                             << "top_p" << 0.1;
    QTest::newRow("plain relu (gpt2_relu)") << "gpt2_relu"
                                            << "positive" << 0.0;
  }
  void defaultActivityRule() {
    QFETCH(QString, variant);
    QFETCH(QString, rule);
    QFETCH(double, p);
    const fs::path d = root_ / variant.toStdString();
    auto r = test::runCli({"record", q(d / "model"), q(root_ / "corpus.safetensors"), "--out", q(d / "rec"),
                           "--seq-len", "16", "--samples", "0", "--quiet"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const json got = recordedRule(d / "rec");
    qInfo("%s: recorded activity rule %s", qPrintable(variant), got.dump().c_str());
    QVERIFY2(got.is_object(), got.dump().c_str());
    QCOMPARE(QString::fromStdString(got.value("rule", std::string())), rule);
    QCOMPARE(got.value("p", -1.0), p);
  }
};

QTEST_GUILESS_MAIN(ArchPipeline)
#include "test_arch_pipeline.moc"
