// Bad checkpoints: each case must give one clear line naming the file and
// tensor (or key), a non-zero exit, and no crash. The cases corrupt a valid
// small gpt2 checkpoint made by scripts/ref/make_checkpoint.py.
#include <QtTest>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "testutil.h"

using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

namespace {

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}
void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file split into its header JSON and data region.
struct Parts {
  nlohmann::json header;
  std::string data;
};
Parts split(const fs::path& p) {
  std::string b = slurp(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(b[i]);
  return {nlohmann::json::parse(b.substr(8, n)), b.substr(8 + n)};
}
void join(const fs::path& p, const Parts& parts) {
  std::string h = parts.header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  spit(p, out + h + parts.data);
}

const char* kFfn = "transformer.h.1.mlp.c_fc.weight";

}  // namespace

class BadInput : public QObject {
  Q_OBJECT
  fs::path model_;

  // Makes a fresh valid checkpoint folder for one case.
  fs::path fresh(const std::string& name) {
    fs::path d = freshDir("bad_input/" + name);
    fs::copy(model_, d / "model", fs::copy_options::recursive);
    return d / "model";
  }

  // Runs inspect (and forward, if asked); each must fail with one line containing every needle.
  void expectError(const fs::path& dir, const std::vector<std::string>& needles, bool alsoForward = false) {
    std::vector<QStringList> runs = {{"inspect", qs(dir)}};
    if (alsoForward) runs.push_back({"forward", qs(dir), "--ids", "1,2,3"});
    for (const QStringList& args : runs) {
      auto r = runCli(args, 120);
      QVERIFY2(r.exitCode > 0, ("exit " + std::to_string(r.exitCode) + " (crash or success): " + r.err).c_str());
      std::string err = r.err;
      while (!err.empty() && err.back() == '\n') err.pop_back();
      QVERIFY2(!err.empty(), "no error message");
      QVERIFY2(err.find('\n') == std::string::npos, ("more than one line: " + r.err).c_str());
      for (const auto& n : needles) QVERIFY2(err.find(n) != std::string::npos, ("'" + n + "' not in: " + err).c_str());
      qInfo("%s -> %s", qPrintable(args.front()), err.c_str());
    }
  }

 private Q_SLOTS:
  void initTestCase() {
    fs::path d = freshDir("bad_input/valid");
    model_ = d / "model";
    auto r = runPython({qs(sourceDir() / "scripts/ref/make_checkpoint.py"), "gpt2_relu", qs(model_)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    auto ok = runCli({"inspect", qs(model_)});
    QVERIFY2(ok.exitCode == 0, ok.err.c_str());
  }

  void truncatedFile() {
    fs::path m = fresh("truncated");
    std::string b = slurp(m / "model.safetensors");
    spit(m / "model.safetensors", b.substr(0, b.size() / 2));
    expectError(m, {"model.safetensors", "tensor '", "outside the data region"}, true);
  }

  void truncatedBeforeHeader() {
    fs::path m = fresh("truncated_header");
    spit(m / "model.safetensors", std::string("\x10\x00\x00", 3));
    expectError(m, {"model.safetensors", "truncated"});
  }

  void headerLengthBeyondFile() {
    fs::path m = fresh("header_len");
    std::string b = slurp(m / "model.safetensors");
    uint64_t n = b.size() + 100;
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    spit(m / "model.safetensors", b);
    expectError(m, {"model.safetensors", "header length", "past the end"});
  }

  void offsetsOutsideData() {
    fs::path m = fresh("offsets_outside");
    Parts p = split(m / "model.safetensors");
    auto& t = p.header[kFfn]["data_offsets"];
    uint64_t len = t[1].get<uint64_t>() - t[0].get<uint64_t>();
    t = {p.data.size() - len + 16, p.data.size() + 16};
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", kFfn, "outside the data region"});
  }

  void offsetsOverlapping() {
    fs::path m = fresh("overlap");
    Parts p = split(m / "model.safetensors");
    // ln_1.bias and ln_1.weight have the same size: point one at the other's bytes.
    p.header["transformer.h.0.ln_1.bias"]["data_offsets"] = p.header["transformer.h.0.ln_1.weight"]["data_offsets"];
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", "overlaps", "transformer.h.0.ln_1."});
  }

  void unknownDType() {
    fs::path m = fresh("dtype");
    Parts p = split(m / "model.safetensors");
    p.header[kFfn]["dtype"] = "Q4_K";
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", kFfn, "unsupported dtype 'Q4_K'"});
  }

  void integerWeights() {
    fs::path m = fresh("int_weights");
    Parts p = split(m / "model.safetensors");
    p.header[kFfn]["dtype"] = "I32";  // same element size as F32
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", kFfn, "I32"});
  }

  void missingTensor() {
    fs::path m = fresh("missing");
    Parts p = split(m / "model.safetensors");
    p.header.erase(kFfn);
    join(m / "model.safetensors", p);
    // The erased entry's bytes stay in the data region: the exact-coverage rule
    // (as in the reference reader) refuses the file before the tensor lookup.
    expectError(m, {"model.safetensors", "unreferenced bytes"});
  }

  void wrongShape() {
    fs::path m = fresh("shape");
    Parts p = split(m / "model.safetensors");
    auto shape = p.header[kFfn]["shape"];
    p.header[kFfn]["shape"] = {shape[1], shape[0]};  // same byte count, transposed
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", kFfn, "has shape [256, 64], expected [64, 256]"}, true);
  }

  void unexpectedTensor() {
    fs::path m = fresh("unexpected");
    Parts p = split(m / "model.safetensors");
    // An extra (empty, so non-overlapping) tensor for a layer the config does not have.
    p.header["transformer.h.7.mlp.c_fc.weight"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
    join(m / "model.safetensors", p);
    expectError(m, {"model.safetensors", "transformer.h.7.mlp.c_fc.weight"});
  }

  void unsupportedModelType() {
    fs::path m = fresh("model_type");
    auto cfg = nlohmann::json::parse(slurp(m / "config.json"));
    cfg["model_type"] = "mamba";
    spit(m / "config.json", cfg.dump());
    expectError(m, {"config.json", "unsupported model_type 'mamba'"});
  }

  void malformedConfig() {
    fs::path m = fresh("config");
    std::string c = slurp(m / "config.json");
    spit(m / "config.json", c.substr(0, c.size() / 2));
    expectError(m, {"config.json", "malformed JSON"});
  }

  void configWrongType() {
    fs::path m = fresh("config_type");
    auto cfg = nlohmann::json::parse(slurp(m / "config.json"));
    cfg["n_layer"] = "two";
    spit(m / "config.json", cfg.dump());
    expectError(m, {"config.json", "n_layer"});
  }

  void noWeights() {
    fs::path m = fresh("no_weights");
    fs::remove(m / "model.safetensors");
    expectError(m, {m.string(), "no weights"}, true);
  }

  void missingShard() {
    fs::path d = freshDir("bad_input/shard");
    auto r = runPython({qs(sourceDir() / "scripts/ref/make_checkpoint.py"), "gpt2_relu", qs(d), "--shards", "2"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    fs::remove(d / "model-00002-of-00002.safetensors");
    expectError(d, {"model-00002-of-00002.safetensors", "missing"});
  }

  void notAFolder() {
    fs::path d = freshDir("bad_input/nothing");
    expectError(d / "absent", {(d / "absent").string()});
  }
};

QTEST_GUILESS_MAIN(BadInput)
#include "test_bad_input.moc"
