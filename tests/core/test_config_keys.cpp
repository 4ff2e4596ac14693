// The config.json key tables (issue 12 kind 1, issue 14): for every supported
// model_type, every key the HF modeling code reads is implemented (changing it
// changes the parsed model), refused by name unless neutral, or ignored
// because it cannot change inference (changing it leaves the parsed model
// identical). Range-checked keys refuse an out-of-range value with a one-line
// error naming the key and the file. Base configs are the ones
// scripts/ref/make_checkpoint.py writes (HF save_pretrained layout).
#include <QtTest>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/model/config.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runPython;
using moefy::test::sourceDir;

namespace {

// One generated checkpoint per model_type.
const std::map<std::string, std::string> kBaseVariant = {
    {"gpt2", "gpt2_gelu_new"}, {"llama", "llama_silu"},   {"mistral", "mistral"},     {"qwen2", "qwen2"},
    {"qwen3", "qwen3"},        {"opt", "opt_pre"},        {"bert", "bert_gelu"},      {"gemma", "gemma"},
    {"gemma2", "gemma2"},      {"gemma3_text", "gemma3"}, {"phi3", "phi3"},           {"olmo2", "olmo2"},
    {"t5", "t5_relu"},         {"mixtral", "mixtral"},    {"qwen2_moe", "qwen2_moe"}, {"olmoe", "olmoe"},
};

const char* useName(KeyUse u) {
  return u == KeyUse::Implemented ? "implemented" : u == KeyUse::Refused ? "refused" : "ignored";
}

// fromJson's error text, or "" if it parsed.
std::string parseError(const nlohmann::json& j, ModelConfig* out = nullptr) {
  try {
    ModelConfig c = ModelConfig::fromJson(j, "probe/config.json");
    if (out) *out = c;
    return "";
  } catch (const FormatError& e) {
    return e.what();
  }
}

}  // namespace

class ConfigKeys : public QObject {
  Q_OBJECT
  std::filesystem::path root_;
  std::map<std::string, nlohmann::json> base_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("config_keys");
    nlohmann::json jobs = nlohmann::json::array();
    for (const auto& [type, variant] : kBaseVariant)
      jobs.push_back({"make_checkpoint", variant, (root_ / type).string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({QString::fromStdString((sourceDir() / "scripts" / "ref" / "batch.py").string()),
                        QString::fromStdString((root_ / "jobs.json").string())});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    for (const auto& [type, variant] : kBaseVariant) {
      std::ifstream f(root_ / type / "config.json");
      base_[type] = nlohmann::json::parse(f);
      QCOMPARE(QString::fromStdString(base_[type]["model_type"].get<std::string>()), QString::fromStdString(type));
    }
    QCOMPARE(kBaseVariant.size(), supportedModelTypes().size());
  }

  // Every key a saved config of the type holds is in the type's table.
  void baseKeysAreInTable_data() {
    QTest::addColumn<QString>("type");
    for (const auto& t : supportedModelTypes()) QTest::newRow(t.c_str()) << QString::fromStdString(t);
  }
  void baseKeysAreInTable() {
    QFETCH(QString, type);
    const auto& keys = configKeys(type.toStdString());
    const auto& j = base_[type.toStdString()];
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool found = false;
      for (const auto& k : keys) found |= it.key() == k.name;
      QVERIFY2(found, qPrintable(type + ": key '" + QString::fromStdString(it.key()) + "' is not in the key table"));
    }
    QVERIFY2(parseError(j).empty(), parseError(j).c_str());
  }

  void eachKey_data() {
    QTest::addColumn<QString>("type");
    QTest::addColumn<QString>("key");
    int n = 0;
    for (const auto& t : supportedModelTypes())
      for (const auto& k : configKeys(t)) {
        QTest::newRow((t + "/" + k.name + " (" + useName(k.use) + ")").c_str())
            << QString::fromStdString(t) << QString(k.name);
        ++n;
      }
    qInfo("%d keys over %zu model types", n, supportedModelTypes().size());
  }

  void eachKey() {
    QFETCH(QString, type);
    QFETCH(QString, key);
    const std::string t = type.toStdString(), name = key.toStdString();
    const ConfigKey* k = nullptr;
    for (const auto& e : configKeys(t))
      if (name == e.name) k = &e;
    QVERIFY(k);
    const nlohmann::json base = base_[t];
    ModelConfig ref;
    QVERIFY2(parseError(base, &ref).empty(), parseError(base).c_str());
    // The error names the key ('key' or, inside a block, 'key.subkey').
    const std::string quoted = "'" + name;

    if (name == "model_type") {
      nlohmann::json j = base;
      j["model_type"] = "gptj";
      std::string err = parseError(j);
      QVERIFY2(err.find("model_type 'gptj'") != std::string::npos, err.c_str());
      return;
    }
    // The probe value: the table's, or the negation of the base's boolean.
    nlohmann::json probe;
    if (*k->probe) {
      probe = nlohmann::json::parse(k->probe);
    } else {
      QVERIFY2(base.contains(name) && base[name].is_boolean(), "no probe value and no boolean in the base config");
      probe = !base[name].get<bool>();
    }
    nlohmann::json j = base;
    j[name] = probe;
    ModelConfig got;
    std::string err = parseError(j, &got);
    switch (k->use) {
      case KeyUse::Implemented:
        QVERIFY2(err.empty(), err.c_str());
        QVERIFY2(got.describe() != ref.describe(), ("setting " + name + " = " + probe.dump() + " changed nothing").c_str());
        break;
      case KeyUse::Ignored:
        QVERIFY2(err.empty(), err.c_str());
        QCOMPARE(QString::fromStdString(got.describe()), QString::fromStdString(ref.describe()));
        break;
      case KeyUse::Refused: {
        QVERIFY2(!err.empty(), ("non-neutral " + name + " = " + probe.dump() + " was accepted").c_str());
        QVERIFY2(err.find(quoted) != std::string::npos && err.find("probe/config.json") != std::string::npos, err.c_str());
        QVERIFY2(err.find('\n') == std::string::npos, err.c_str());
        if (*k->neutral) {
          nlohmann::json n = base;
          n[name] = nlohmann::json::parse(k->neutral);
          QVERIFY2(parseError(n).empty(), parseError(n).c_str());
        }
        break;
      }
    }
    if (*k->bad) {
      nlohmann::json b = base;
      b[name] = nlohmann::json::parse(k->bad);
      std::string e = parseError(b);
      QVERIFY2(!e.empty(), (name + " = " + k->bad + " (out of range) was accepted").c_str());
      QVERIFY2(e.find(quoted) != std::string::npos && e.find("probe/config.json") != std::string::npos, e.c_str());
      QVERIFY2(e.find('\n') == std::string::npos, e.c_str());
    }
  }

  // Sub-keys of rope_scaling: unknown ones and LongRoPE are refused by name, ranges checked.
  void ropeScalingBlock_data() {
    QTest::addColumn<QString>("block");
    QTest::addColumn<QString>("error");  // "" = accepted
    QTest::newRow("llama3 ok") << R"({"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8})" << "";
    QTest::newRow("llama3 missing") << R"({"rope_type":"llama3","factor":8.0})" << "missing key 'rope_scaling.";
    QTest::newRow("llama3 freq order") << R"({"rope_type":"llama3","factor":8.0,"low_freq_factor":4.0,"high_freq_factor":1.0,"original_max_position_embeddings":8})" << "rope_scaling.high_freq_factor";
    QTest::newRow("yarn ok") << R"({"rope_type":"yarn","factor":4.0,"beta_fast":16,"mscale":1,"mscale_all_dim":1})" << "";
    QTest::newRow("yarn truncate false") << R"({"rope_type":"yarn","factor":4.0,"truncate":false})"
                                         << "";
    QTest::newRow("yarn truncate not bool") << R"({"rope_type":"yarn","factor":4.0,"truncate":"no"})"
                                            << "rope_scaling.truncate";
    QTest::newRow("yarn mscale not number") << R"({"rope_type":"yarn","factor":4.0,"mscale":"1"})"
                                            << "rope_scaling.mscale";
    QTest::newRow("yarn unknown key") << R"({"rope_type":"yarn","factor":4.0,"extrapolation_factor":1.0})"
                                      << "rope_scaling.extrapolation_factor";
    QTest::newRow("yarn bad attention_factor") << R"({"rope_type":"yarn","factor":4.0,"attention_factor":-1})" << "rope_scaling.attention_factor";
    QTest::newRow("linear extra key") << R"({"rope_type":"linear","factor":2.0,"low_freq_factor":1.0})" << "rope_scaling.low_freq_factor";
    QTest::newRow("longrope") << R"({"rope_type":"longrope","short_factor":[1],"long_factor":[1]})" << "rope_type 'longrope'";
    QTest::newRow("su") << R"({"type":"su","short_factor":[1],"long_factor":[1]})" << "rope_type 'su'";
    QTest::newRow("unknown") << R"({"rope_type":"ntk-by-parts","factor":2.0})" << "rope_type 'ntk-by-parts'";
    QTest::newRow("no type") << R"({"factor":2.0})" << "'rope_scaling' has no rope_type";
    QTest::newRow("dynamic factor < 1") << R"({"rope_type":"dynamic","factor":0.5})" << "rope_scaling.factor";
  }
  void ropeScalingBlock() {
    QFETCH(QString, block);
    QFETCH(QString, error);
    for (const char* t : {"llama", "phi3"}) {
      nlohmann::json j = base_[t];
      j["rope_scaling"] = nlohmann::json::parse(block.toStdString());
      std::string err = parseError(j);
      if (error.isEmpty()) {
        QVERIFY2(err.empty(), err.c_str());
      } else {
        QVERIFY2(err.find(error.toStdString()) != std::string::npos, (t + std::string(": ") + err).c_str());
      }
    }
  }
};

QTEST_GUILESS_MAIN(ConfigKeys)
#include "test_config_keys.moc"
