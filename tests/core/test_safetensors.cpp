// Safetensors writer/reader round trip: every dtype, empty and scalar tensors,
// __metadata__, alignment, atomicity, and interop with the numpy reader in
// scripts/ref/st_io.py.
#include <QtTest>

#include <ATen/ATen.h>

#include <fstream>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

class Safetensors : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void roundTrip() {
    fs::path dir = freshDir("safetensors/roundtrip");
    at::manual_seed(7);
    std::vector<std::pair<std::string, at::Tensor>> in = {
        {"f64", at::randn({3, 5}, at::kDouble)},
        {"f32", at::randn({4, 3, 2})},
        {"f16", at::randn({7}).to(at::kHalf)},
        {"bf16", at::randn({2, 9}).to(at::kBFloat16)},
        {"i64", at::randint(-1000000, 1000000, {6}, at::kLong)},
        {"i32", at::randint(-1000, 1000, {2, 2}, at::kInt)},
        {"i16", at::randint(-300, 300, {5}, at::kShort)},
        {"i8", at::randint(-100, 100, {3}, at::kChar)},
        {"u8", at::randint(0, 255, {3}, at::kByte)},
        {"bool", at::randint(0, 2, {4}).to(at::kBool)},
        {"empty", at::empty({0, 4})},
        {"scalar", at::full({}, 2.5f)},
        {"strided", at::randn({6, 4}).t()},  // non-contiguous input
    };
    std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "quotes \" and unicode \xc3\xa9"}};
    fs::path file = dir / "t.safetensors";
    writeSafetensors(file, in, meta);
    for (const auto& e : fs::directory_iterator(dir))
      QVERIFY2(e.path() == file, ("temporary left behind: " + e.path().string()).c_str());

    auto f = SafetensorsFile::open(file);
    QCOMPARE(f->tensors().size(), in.size());
    QCOMPARE(f->metadata(), meta);
    for (const auto& [name, t] : in) {
      QVERIFY2(f->contains(name), name.c_str());
      at::Tensor r = f->raw(name);
      QCOMPARE(r.scalar_type(), t.scalar_type());
      QCOMPARE(r.sizes().vec(), t.sizes().vec());
      QVERIFY2(at::equal(r, t), name.c_str());
    }
    QVERIFY(at::equal(f->f32("bf16"), in[3].second.to(at::kFloat)));
    qInfo("round trip of %zu tensors exact", in.size());

    // The data region starts 8-byte aligned, so F32 tensors are zero-copy views.
    std::ifstream s(file, std::ios::binary);
    uint8_t len[8];
    s.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    QCOMPARE((8 + n) % 8, uint64_t(0));

    // The numpy reader (independent of this code) sees the same values.
    auto py = runPython({"-c",
                         "import sys; sys.path.insert(0, sys.argv[1]); import st_io, numpy as np\n"
                         "t, m = st_io.read(sys.argv[2])\n"
                         "assert m['format'] == 'pt', m\n"
                         "a = {k: v for k, (d, v) in t.items()}\n"
                         "assert t['bf16'][0] == 'BF16' and t['f16'][0] == 'F16', t['bf16'][0]\n"
                         "f = st_io.upcast(a['bf16'], 'BF16')\n"
                         "print(a['f32'][1].shape, repr(float(a['f32'][1,2,1])), repr(float(f[1,8])), int(a['i64'][5]), a['strided'][1].shape)\n",
                         QString::fromStdString((sourceDir() / "scripts/ref").string()),
                         QString::fromStdString(file.string())});
    QVERIFY2(py.exitCode == 0, py.err.c_str());
    qInfo("python reads: %s", py.out.c_str());
    // Python's repr gives the shortest round-trip float; compare numerically.
    QStringList got = QString::fromStdString(py.out).simplified().split(' ');
    QCOMPARE(got.size(), 6);
    QCOMPARE(got[2].toDouble(), static_cast<double>(in[1].second[1][2][1].item<float>()));
    QCOMPARE(got[3].toDouble(), static_cast<double>(in[3].second[1][8].item<float>()));
    QCOMPARE(got[4].toLongLong(), static_cast<long long>(in[4].second[5].item<int64_t>()));
    QCOMPARE(got[5], QString("(6,)"));
  }

  void writerErrors() {
    fs::path dir = freshDir("safetensors/errors");
    bool threw = false;
    try {
      writeSafetensors(dir / "d.safetensors", {{"a", at::zeros({2})}, {"a", at::zeros({2})}});
    } catch (const Error& e) {
      threw = true;
      QVERIFY2(std::string(e.what()).find("'a'") != std::string::npos, e.what());
    }
    QVERIFY(threw);
    QVERIFY(!fs::exists(dir / "d.safetensors"));
    threw = false;
    try {
      writeSafetensors(dir / "no" / "such" / "dir.safetensors", {{"a", at::zeros({2})}});
    } catch (const IoError& e) {
      threw = true;
      QVERIFY2(std::string(e.what()).find("dir.safetensors") != std::string::npos, e.what());
    }
    QVERIFY(threw);
    threw = false;
    try {
      writeSafetensors(dir / "c.safetensors", {{"c", at::zeros({2}, at::kComplexFloat)}});
    } catch (const FormatError& e) {
      threw = true;
      QVERIFY2(std::string(e.what()).find("'c'") != std::string::npos, e.what());
    }
    QVERIFY(threw);
  }

  // parseSafetensorsHeader on hand-made headers (what the fuzz target drives).
  void headerParser() {
    auto parse = [](const std::string& json, uint64_t dataBytes) {
      std::string b(8, '\0');
      for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
      b += json + std::string(dataBytes, '\0');
      std::vector<TensorInfo> t;
      std::map<std::string, std::string> m;
      uint64_t start = 0;
      parseSafetensorsHeader(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "h.safetensors", t, m, start);
      return t;
    };
    auto t = parse(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v"}})", 16);
    QCOMPARE(t.size(), size_t(1));
    QCOMPARE(t[0].numel(), int64_t(4));
    const std::vector<std::pair<std::string, std::string>> bad = {
        {R"([1,2])", "not a JSON object"},
        {R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", "bytes of data"},
        {R"({"a":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}})", "negative"},
        {R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}})", "end before"},
        {R"({"a":{"dtype":"F32","shape":[2,2]}})", "lacks"},
        {R"({"a":{"dtype":7,"shape":[2,2],"data_offsets":[0,16]}})", "dtype is not a string"},
        {R"({"__metadata__":{"k":1}})", "not a string"},
        {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", "implausibly large"},
        {R"({"a":)", "malformed JSON"},
        // Issue 12: a name given twice, unreferenced bytes (the reference reader refuses both).
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
         "appears twice"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", "unreferenced bytes"},
    };
    for (const auto& [json, needle] : bad) {
      bool threw = false;
      try {
        parse(json, 16);
      } catch (const FormatError& e) {
        threw = true;
        QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
        QVERIFY2(std::string(e.what()).find("h.safetensors") != std::string::npos, e.what());
      }
      QVERIFY2(threw, json.c_str());
    }
  }
};

QTEST_GUILESS_MAIN(Safetensors)
#include "test_safetensors.moc"
