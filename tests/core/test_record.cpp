// Recorder core behaviour: exact co-activation kernel, merge = one recording,
// resume = uninterrupted, cancel leaves nothing, and bad input errors.
#include <QtTest>
#include <fcntl.h>
#include <sys/file.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>

#include "analysis/common/error.h"
#include "analysis/common/timing.h"
#include "analysis/eval/eval.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/record/coact.h"
#include "analysis/record/exact_sum.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

std::vector<Sequence> randomSequences(int count, int len, int vocab, uint64_t seed, int categories) {
  std::mt19937_64 rng(seed);
  std::vector<Sequence> out;
  for (int i = 0; i < count; ++i) {
    Sequence s;
    const int L = len - static_cast<int>(rng() % 5);  // ragged
    for (int t = 0; t < L; ++t) s.ids.push_back(static_cast<int32_t>(rng() % vocab));
    s.docId = i / 3;
    s.category = categories > 0 ? static_cast<int32_t>(rng() % categories) : -1;
    s.start = (i % 3) * len;
    out.push_back(std::move(s));
  }
  return out;
}

// Every tensor of two recordings' safetensors files is bitwise equal.
void compareFolders(const fs::path& a, const fs::path& b, const std::vector<std::string>& files) {
  for (const auto& f : files) {
    auto fa = SafetensorsFile::open(a / f), fb = SafetensorsFile::open(b / f);
    QCOMPARE(fa->tensors().size(), fb->tensors().size());
    for (const auto& t : fa->tensors()) {
      at::Tensor x = fa->raw(t.name), y = fb->raw(t.name);
      const bool eq = x.sizes() == y.sizes() && at::equal(x, y);
      if (!eq) qWarning() << f.c_str() << t.name.c_str() << "differs";
      QVERIFY(eq);
    }
  }
}

// Every tensor of a safetensors file (cloned), to edit and write back.
std::vector<std::pair<std::string, at::Tensor>> loadAll(const fs::path& p) {
  auto f = SafetensorsFile::open(p);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& t : f->tensors()) out.emplace_back(t.name, f->raw(t.name).clone());
  return out;
}

at::Tensor& tensorNamed(std::vector<std::pair<std::string, at::Tensor>>& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// n with n(n+1)/2 == P: the side of a packed upper triangle of P elements.
int64_t triangleSide(int64_t P) {
  int64_t n = static_cast<int64_t>((std::sqrt(8.0 * static_cast<double>(P) + 1.0) - 1.0) / 2.0);
  while (n * (n + 1) / 2 < P) ++n;
  while (n > 0 && n * (n + 1) / 2 > P) --n;
  return n;
}

// The full symmetric [n, n] matrix of a packed upper triangle, expanded here
// independently of the core's unpackUpperTriangle (torch's row-major
// triu_indices), after checking the documented index formula
// k(i, j) = i*n - i*(i-1)/2 + (j - i) on a few elements.
at::Tensor expandByHand(const at::Tensor& packed) {
  const int64_t n = triangleSide(packed.numel());
  if (n * (n + 1) / 2 != packed.numel()) throw std::runtime_error("not a packed triangle");
  at::Tensor iu = at::triu_indices(n, n, 0, at::kLong);  // [2, n(n+1)/2], row-major
  for (int64_t i : {int64_t{0}, n / 3, n - 1})
    for (int64_t j : {i, (i + n) / 2, n - 1}) {
      const int64_t k = i * n - i * (i - 1) / 2 + (j - i);
      if (i < 0 || i > j || j >= n) continue;
      if (iu[0][k].item<int64_t>() != i || iu[1][k].item<int64_t>() != j)
        throw std::runtime_error("triu_indices order differs from the documented packing");
    }
  at::Tensor full = at::zeros({n, n}, packed.options());
  full.index_put_({iu[0], iu[1]}, packed);
  full.index_put_({iu[1], iu[0]}, packed);
  return full;
}

// Rewrites a (version 2) recording folder as format version 1: the full
// matrices in coact.safetensors and "version": 1.
void toVersion1(const fs::path& dir) {
  auto tensors = loadAll(dir / "coact.safetensors");
  for (auto& [name, t] : tensors) t = expandByHand(t);
  writeSafetensors(dir / "coact.safetensors", tensors);
  auto m = nlohmann::json::parse(readFile(dir / "manifest.json"));
  m["version"] = 1;
  writeFileAtomic(dir / "manifest.json", m.dump(2));
}

// The length of a safetensors file's JSON header (its first 8 bytes).
uint64_t headerBytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  unsigned char b[8] = {};
  f.read(reinterpret_cast<char*>(b), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n;
}

// The FormatError message of opening `dir` ("" when it opens).
std::string openError(const fs::path& dir) {
  try {
    Recording::open(dir);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

SourceInfo info3() {
  SourceInfo i;
  i.path = "memory";
  i.kind = "tokens";
  i.categories = {"a", "b", "c"};
  return i;
}

}  // namespace

class TestRecord : public QObject {
  Q_OBJECT
  fs::path dir_;
  std::unique_ptr<Model> model_, other_;

 private Q_SLOTS:
  void initTestCase() {
    dir_ = test::freshDir("record_core");
    auto r = test::runPython({QString::fromStdString((test::sourceDir() / "scripts/ref/rec_tiny_gpt2.py").string()),
                              QString::fromStdString((dir_ / "model").string()), "--seed", "3"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    r = test::runPython({QString::fromStdString((test::sourceDir() / "scripts/ref/rec_tiny_gpt2.py").string()),
                         QString::fromStdString((dir_ / "other").string()), "--seed", "4", "--d-ff", "96"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    model_ = Model::load(dir_ / "model");
    other_ = Model::load(dir_ / "other");
  }

  void coactKernelMatchesNaive() {
    // Sizes that exercise the 4x4 tiles, row-block and word-block edges.
    for (auto [n, T] : {std::pair<int64_t, int64_t>{7, 5}, {130, 1000}, {67, 64 * 300 + 3}, {5, 64 * 257 + 64}}) {
      std::mt19937_64 rng(n * 31 + T);
      std::vector<uint8_t> mask(static_cast<size_t>(n * T));
      for (auto& m : mask) m = (rng() % 10) < 3;
      BitMatrix bits;
      packMask(mask.data(), T, n, bits);
      std::vector<int32_t> naive(static_cast<size_t>(n * n));
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
          int64_t c = 0;
          for (int64_t t = 0; t < T; ++t) c += mask[t * n + i] & mask[t * n + j];
          naive[i * n + j] = static_cast<int32_t>(c);
        }
      for (CoactKernel kernel : {CoactKernel::Scalar, CoactKernel::Avx2, CoactKernel::Avx512, CoactKernel::Best}) {
        if (!coactKernelAvailable(kernel)) {
          qInfo() << "coact kernel" << coactKernelName(kernel) << "does not run on this CPU: skipped";
          QVERIFY_THROWS_EXCEPTION(ParameterError, accumulateCoact(bits, std::vector<int32_t>(n * n).data(), kernel));
          continue;
        }
        // Twice into the same counts: kernels accumulate into the upper triangle.
        std::vector<int32_t> counts(static_cast<size_t>(n * n), 0);
        accumulateCoact(bits, counts.data(), kernel);
        accumulateCoact(bits, counts.data(), kernel);
        mirrorUpper(counts.data(), n);
        int64_t maxDiff = 0;
        for (int64_t i = 0; i < n * n; ++i)
          maxDiff = std::max<int64_t>(maxDiff, std::abs(2 * int64_t{naive[i]} - counts[i]));
        qInfo() << "coact kernel" << coactKernelName(kernel) << "n" << n << "T" << T << "max diff" << maxDiff;
        QCOMPARE(maxDiff, int64_t{0});
      }
    }
  }

  void activeBitsMatchDefinition() {
    // activeBits for the three rules against their definitions, written here
    // independently (top:P: the k = round(P n), at least 1, largest |h|, ties
    // to the lower index, by a stable sort), with every compare kernel this
    // CPU runs, on lengths on and off 16 and 64, with NaN, infinities, -0,
    // values at the threshold and many ties; bits past n must be 0. Then
    // packTokenBits of those bits against packMask of the same rule as bytes.
    int64_t wrong = 0, packWrong = 0;
    for (auto [N, n] : {std::pair<int64_t, int64_t>{3, 1}, {70, 15}, {64, 64}, {130, 67}, {9, 1030}}) {
      std::mt19937_64 rng(N * 17 + n);
      std::vector<float> h(static_cast<size_t>(N * n));
      const float special[] = {std::nanf(""),
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               -0.0f,
                               0.0f,
                               0.5f,
                               -0.5f};
      for (auto& v : h) {
        const auto r = rng() % 10;
        v = r < 2   ? special[rng() % 7]
            : r < 5 ? 0.25f * static_cast<float>(static_cast<int>(rng() % 9) - 4)  // ties
                    : static_cast<float>(static_cast<double>(rng() % 2001) / 1000.0 - 1.0);
      }
      const int64_t G = (n + 63) / 64;
      for (const char* rule : {"positive", "threshold:0.5", "top:0.1", "top:0.5", "top:1"}) {
        const ActiveRule ar = ActiveRule::parse(rule);
        // top:P ranks |h|, which is not defined for a NaN: those rows get none.
        std::vector<float> hp = h;
        if (ar.kind == ActiveRule::Kind::TopP)
          for (auto& v : hp)
            if (std::isnan(v)) v = 0.125f;
        std::vector<uint8_t> want(h.size(), 0);
        for (int64_t t = 0; t < N; ++t) {
          const float* row = hp.data() + t * n;
          uint8_t* w = want.data() + t * n;
          if (ar.kind == ActiveRule::Kind::Positive) {
            for (int64_t j = 0; j < n; ++j) w[j] = row[j] > 0.0f;
          } else if (ar.kind == ActiveRule::Kind::Threshold) {
            for (int64_t j = 0; j < n; ++j) w[j] = std::fabs(row[j]) > 0.5f;
          } else {
            const int64_t k = std::max<int64_t>(1, std::llround(ar.p * static_cast<double>(n)));
            std::vector<int64_t> order(static_cast<size_t>(n));
            std::iota(order.begin(), order.end(), int64_t{0});
            std::stable_sort(order.begin(), order.end(),
                             [&](int64_t x, int64_t y) { return std::fabs(row[x]) > std::fabs(row[y]); });
            for (int64_t q = 0; q < k; ++q) w[order[static_cast<size_t>(q)]] = 1;
          }
        }
        std::vector<uint64_t> bits(static_cast<size_t>(N * G));
        for (CoactKernel kernel : {CoactKernel::Scalar, CoactKernel::Avx2, CoactKernel::Avx512, CoactKernel::Best}) {
          if (kernel == CoactKernel::Avx512 && !__builtin_cpu_supports("avx512f")) continue;
          if (kernel == CoactKernel::Avx2 && !__builtin_cpu_supports("avx2")) continue;
          std::fill(bits.begin(), bits.end(), ~uint64_t{0});
          activeBits(hp.data(), N, n, ar, bits.data(), kernel);
          for (int64_t t = 0; t < N; ++t)
            for (int64_t j = 0; j < G * 64; ++j) {
              const bool bit = (bits[static_cast<size_t>(t * G + j / 64)] >> (j % 64)) & 1;
              wrong += bit != (j < n && want[static_cast<size_t>(t * n + j)] != 0);
            }
        }
        BitMatrix fromBytes, fromBits;
        packMask(want.data(), N, n, fromBytes);
        packTokenBits(bits.data(), N, n, fromBits);
        packWrong += fromBytes.bits != fromBits.bits || fromBits.words != fromBytes.words;
      }
    }
    qInfo() << "activeBits vs the rules' definitions: wrong bits" << wrong
            << "; packTokenBits vs packMask: differing matrices" << packWrong;
    QCOMPARE(wrong, int64_t{0});
    QCOMPARE(packWrong, int64_t{0});
  }

  void packMaskMatchesDefinition() {
    // Every bit of every word against the byte mask, for sizes on and off
    // the 64-token and 64-neuron tile edges and 8-byte groups, with mask
    // bytes other than 0 and 1 (nonzero = active); bits past the last token are 0.
    int64_t wrong = 0;
    for (auto [T, n] :
         {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {64, 64}, {65, 63}, {130, 200}, {1000, 1025}, {333, 8}}) {
      std::mt19937_64 rng(T * 7 + n);
      std::vector<uint8_t> mask(static_cast<size_t>(T * n));
      for (auto& m : mask) {
        const auto r = rng() % 3;
        m = r == 0 ? 0 : (r == 1 ? 1 : static_cast<uint8_t>(rng() % 256));
      }
      BitMatrix bits;
      packMask(mask.data(), T, n, bits);
      QCOMPARE(bits.rows, n);
      QCOMPARE(bits.words, (T + 63) / 64);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t t = 0; t < bits.words * 64; ++t) {
          const bool want = t < T && mask[static_cast<size_t>(t * n + i)] != 0;
          wrong += want != (((bits.row(i)[t / 64] >> (t % 64)) & 1) != 0);
        }
    }
    qInfo() << "packMask: wrong bits" << wrong;
    QCOMPARE(wrong, int64_t{0});
  }

  void triangleHelpersRoundTrip() {
    // packUpperTriangle / unpackUpperTriangle (and the writer's in-place
    // forms) against the documented index formula, for I32, F32 and F64.
    for (int64_t n : {0, 1, 2, 7, 65, 130}) {
      for (auto dtype : {at::kInt, at::kFloat, at::kDouble}) {
        at::Tensor a = at::randint(0, 1000, {n, n}, at::kLong).to(dtype);
        at::Tensor sym = a.triu() + a.triu(1).transpose(0, 1);
        at::Tensor p = packUpperTriangle(a);  // reads the upper triangle only
        QCOMPARE(p.dim(), int64_t{1});
        QCOMPARE(p.size(0), upperTriangleSize(n));
        QCOMPARE(p.scalar_type(), dtype);
        at::Tensor s64 = sym.to(at::kDouble), p64 = p.to(at::kDouble);
        for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 9))
          for (int64_t j = i; j < n; ++j) {
            QCOMPARE(upperTriangleIndex(n, i, j), i * n - i * (i - 1) / 2 + (j - i));
            QCOMPARE(p64[upperTriangleIndex(n, i, j)].item<double>(), s64[i][j].item<double>());
          }
        QVERIFY(at::equal(unpackUpperTriangle(p, n), sym));
        QVERIFY(at::equal(expandByHand(p), sym));
        at::Tensor b = a.clone();
        at::Tensor view = packUpperTriangleInPlace(b);
        QVERIFY(at::equal(view, p));
        unpackUpperTriangleInPlace(b);
        QVERIFY(at::equal(b, sym));
      }
    }
    QVERIFY_THROWS_EXCEPTION(ParameterError, packUpperTriangle(at::zeros({3, 4}, at::kInt)));
    QVERIFY_THROWS_EXCEPTION(ParameterError, packUpperTriangle(at::zeros({3, 3}, at::kHalf)));
    QVERIFY_THROWS_EXCEPTION(ParameterError, unpackUpperTriangle(at::zeros({5}, at::kInt), 3));
    QVERIFY_THROWS_EXCEPTION(ParameterError, unpackUpperTriangle(at::zeros({3, 2}, at::kInt), 2));
  }

  void coactStoredAsUpperTriangle() {
    auto seqs = randomSequences(12, 16, 64, 15, 3);
    RecordOptions o;
    o.seqLen = 16;
    o.batch = 4;
    o.samples = 1000;  // more than the tokens: every token's activations are kept
    o.softCoact = true;
    o.active = ActiveRule::parse("positive");
    o.checkpointSeconds = 0;
    // Auto keeps the full matrix at this width (kPackCoactAbove): the default is version 1 here.
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "tri_auto", JobContext::none());
    QCOMPARE(Recording::open(dir_ / "tri_auto").formatVersion(), 1);
    o.coactStorage = RecordOptions::CoactStorage::Triangle;
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "tri", JobContext::none());
    Recording r = Recording::open(dir_ / "tri");
    // (a) Format version 2: every site's coact and coact_soft is 1-D of n(n+1)/2.
    QCOMPARE(r.formatVersion(), 2);
    QCOMPARE(r.manifest()["version"].get<int>(), 2);
    auto file = SafetensorsFile::open(dir_ / "tri" / "coact.safetensors");
    uint64_t packedBytes = 0, fullBytes = 0;
    for (int L : r.layers()) {
      const int64_t n = r.width(L);
      const std::string P = r.site(L).prefix();
      for (const char* what : {"coact", "coact_soft"}) {
        const TensorInfo* t = file->find(P + what);
        QVERIFY(t);
        QCOMPARE(t->shape, std::vector<int64_t>{n * (n + 1) / 2});
        packedBytes += static_cast<uint64_t>(n * (n + 1) / 2) * 4;
        fullBytes += static_cast<uint64_t>(n * n) * 4;
      }
      QCOMPARE(int(file->find(P + "coact")->dtype), int(DType::I32));
      QCOMPARE(int(file->find(P + "coact_soft")->dtype), int(DType::F32));
    }
    // The file is its header and exactly the packed bytes: 2 sites x (I32 + F32)
    // x 128*129/2 x 4 B = 132096 B against 262144 B for the full matrices.
    const fs::path v2 = dir_ / "tri" / "coact.safetensors";
    QCOMPARE(packedBytes, uint64_t{2 * 2 * 8256 * 4});
    QCOMPARE(static_cast<uint64_t>(fs::file_size(v2)), 8 + headerBytes(v2) + packedBytes);
    // (b), (c) The same recording as version 1 (full matrices written by hand)
    // opens and reads the same matrices; its file is twice the data.
    fs::remove_all(dir_ / "tri_v1");
    fs::copy(dir_ / "tri", dir_ / "tri_v1", fs::copy_options::recursive);
    toVersion1(dir_ / "tri_v1");
    const fs::path v1 = dir_ / "tri_v1" / "coact.safetensors";
    QCOMPARE(static_cast<uint64_t>(fs::file_size(v1)), 8 + headerBytes(v1) + fullBytes);
    const double ratio = static_cast<double>(fs::file_size(v2)) / static_cast<double>(fs::file_size(v1));
    qInfo() << "coact.safetensors: version 2" << fs::file_size(v2) << "B, version 1" << fs::file_size(v1) << "B, ratio"
            << ratio << "((n+1)/2n =" << 129.0 / 256.0 << ")";
    QVERIFY(ratio > 0.5 && ratio < 0.51);
    Recording old = Recording::open(dir_ / "tri_v1");
    QCOMPARE(old.formatVersion(), 1);
    for (int L : r.layers()) {
      const int64_t n = r.width(L);
      at::Tensor C = r.coact(L);
      QCOMPARE(C.sizes().vec(), (std::vector<int64_t>{n, n}));
      QCOMPARE(C.scalar_type(), at::kInt);
      QVERIFY(at::equal(C, C.transpose(0, 1)));
      QVERIFY(at::equal(C, old.coact(L)));
      QVERIFY(at::equal(C, expandByHand(file->raw(r.site(L).prefix() + "coact"))));
      QVERIFY(at::equal(r.coactSoft(L), old.coactSoft(L)));
      QCOMPARE(r.coactSoft(L).sizes().vec(), (std::vector<int64_t>{n, n}));
      // An independent recount: every token is in the reservoir (F16 keeps the sign of h).
      QCOMPARE(r.sampleCount(), r.tokens());
      at::Tensor A = (r.sampleFfnAct(L).to(at::kFloat) > 0).to(at::kLong);  // [tokens, n]
      QVERIFY(at::equal(C.to(at::kLong), A.transpose(0, 1).matmul(A)));
    }
    // Merging a version 1 and a version 2 recording gives what merging two
    // version 2 recordings gives (written as version 2).
    mergeRecordings({dir_ / "tri", dir_ / "tri_v1"}, dir_ / "tri_mixed", true, JobContext::none());
    fs::remove_all(dir_ / "tri_b");
    fs::copy(dir_ / "tri", dir_ / "tri_b", fs::copy_options::recursive);
    mergeRecordings({dir_ / "tri", dir_ / "tri_b"}, dir_ / "tri_same", true, JobContext::none());
    Recording mixed = Recording::open(dir_ / "tri_mixed"), same = Recording::open(dir_ / "tri_same");
    QCOMPARE(mixed.formatVersion(), 2);
    for (int L : r.layers()) {
      QVERIFY(at::equal(mixed.coact(L), same.coact(L)));
      QVERIFY(at::equal(mixed.coact(L), r.coact(L) * 2));
      QVERIFY(at::equal(mixed.coactSoft(L), same.coactSoft(L)));
    }
    // (d) A mis-shaped packed tensor, a full matrix under version 2, packed
    // tensors under version 1, a wrong dtype and an unknown version are
    // refused, in one line naming the file and the tensor.
    struct Case {
      std::string name, expect;
      std::function<void(std::vector<std::pair<std::string, at::Tensor>>&, nlohmann::json&)> edit;
    };
    const std::vector<Case> cases = {
        {"truncated", "coact.safetensors: tensor 'blk.0.coact' has shape [8255], expected [8256]",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.0.coact");
           c = c.narrow(0, 0, c.numel() - 1).clone();
         }},
        {"soft_truncated", "coact.safetensors: tensor 'blk.1.coact_soft' has shape [8000], expected [8256]",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.1.coact_soft");
           c = c.narrow(0, 0, 8000).clone();
         }},
        {"full_under_v2", "coact.safetensors: tensor 'blk.1.coact' has shape [128, 128], expected [8256]",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.1.coact");
           c = expandByHand(c);
         }},
        {"packed_under_v1", "coact.safetensors: tensor 'blk.0.coact' has shape [8256], expected [128, 128]",
         [](auto&, auto& m) { m["version"] = 1; }},
        {"dtype", "coact.safetensors: tensor 'blk.0.coact' has dtype F32, expected I32",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.0.coact");
           c = c.to(at::kFloat);
         }},
        {"version3", "manifest.json: unsupported version 3", [](auto&, auto& m) { m["version"] = 3; }},
    };
    for (const auto& c : cases) {
      const fs::path d = dir_ / ("tri_" + c.name);
      fs::remove_all(d);
      fs::copy(dir_ / "tri", d, fs::copy_options::recursive);
      auto tensors = loadAll(d / "coact.safetensors");
      auto manifest = nlohmann::json::parse(readFile(d / "manifest.json"));
      c.edit(tensors, manifest);
      writeSafetensors(d / "coact.safetensors", tensors);
      writeFileAtomic(d / "manifest.json", manifest.dump());
      const std::string e = openError(d);
      qInfo() << c.name.c_str() << "->" << e.c_str();
      QVERIFY2(e.find(c.expect) != std::string::npos, e.c_str());
      QVERIFY2(e.find(d.filename().string()) != std::string::npos, e.c_str());
      QVERIFY2(e.find('\n') == std::string::npos, e.c_str());
    }
  }

  void exactSumIsOrderIndependent() {
    // Random F64 terms of wildly different magnitudes: any order and any
    // grouping gives the same record, and its value is the sum within 2^-40
    // per term (the truncation).
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> U(-1, 1);
    std::vector<double> terms;
    for (int i = 0; i < 5000; ++i) terms.push_back(std::ldexp(U(rng), static_cast<int>(rng() % 60) - 30));
    auto total = [](const std::vector<double>& v) {
      std::array<int64_t, 3> r{0, 0, 0};
      for (double x : v) exact_sum::add(r.data(), x);
      return r;
    };
    const auto a = total(terms);
    std::vector<double> shuffled = terms;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    QVERIFY(total(shuffled) == a);
    // Two halves combined, in either order.
    std::vector<double> h1(terms.begin(), terms.begin() + 2500), h2(terms.begin() + 2500, terms.end());
    auto b = total(h1), c = total(h2);
    auto bc = b;
    exact_sum::combine(c.data(), bc.data());
    exact_sum::combine(b.data(), c.data());
    QVERIFY(bc == a && c == a);
    long double ref = 0;
    for (double x : terms) ref += x;
    const double diff = std::abs(exact_sum::value(a.data()) - static_cast<double>(ref));
    qInfo() << "exact sum of 5000 terms: |value - long double sum| =" << diff << "(bound 5000 * 2^-40 = 4.5e-9)";
    QVERIFY(diff <= 5000 * std::ldexp(1.0, -40) + 1e-15 * std::abs(static_cast<double>(ref)));
    // Non-finite terms: +inf, -inf, NaN and their mixtures.
    std::array<int64_t, 3> r{0, 0, 0};
    exact_sum::add(r.data(), 1.5);
    exact_sum::add(r.data(), std::numeric_limits<double>::infinity());
    QCOMPARE(exact_sum::value(r.data()), std::numeric_limits<double>::infinity());
    exact_sum::add(r.data(), -std::numeric_limits<double>::infinity());
    QVERIFY(std::isnan(exact_sum::value(r.data())));
    // Overflow of the 128-bit sum saturates to the sign's infinity.
    std::array<int64_t, 3> big{0, 0, 0};
    for (int i = 0; i < 4; ++i) exact_sum::add(big.data(), 0x1p85);
    QCOMPARE(exact_sum::value(big.data()), std::numeric_limits<double>::infinity());
    std::array<int64_t, 3> neg{0, 0, 0};
    exact_sum::add(neg.data(), -2.75);
    QCOMPARE(exact_sum::value(neg.data()), -2.75);
  }

  void mergeEqualsOneRecording() {
    auto seqs = randomSequences(24, 20, 64, 1, 3);
    // Shards cut at a batch boundary, so every forward pass sees the same
    // padded batch as in the single recording (bitwise-equal activations).
    std::vector<Sequence> a(seqs.begin(), seqs.begin() + 12), b(seqs.begin() + 12, seqs.end());
    RecordOptions o;
    o.seqLen = 20;
    o.batch = 4;
    // Chunks of 4 sequences: the shards hold whole chunks of the single run,
    // so the exact accumulators see the same chunk partials (exact_sum.h).
    o.chunkSequences = 4;
    o.samples = 1000;  // more than the tokens: samples are exact too
    o.softCoact = true;
    o.checkpointSeconds = 0;
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "all", JobContext::none());
    recordActivations(*model_, vectorSource(a), info3(), o, dir_ / "A", JobContext::none());
    recordActivations(*model_, vectorSource(b), info3(), o, dir_ / "B", JobContext::none());
    mergeRecordings({dir_ / "A", dir_ / "B"}, dir_ / "AB", false, JobContext::none());
    Recording all = Recording::open(dir_ / "all"), ab = Recording::open(dir_ / "AB");
    QCOMPARE(ab.tokens(), all.tokens());
    QCOMPARE(ab.sequences(), all.sequences());
    // Integer counts, co-activations, samples and the F64 sums (through their
    // exact accumulators) are bitwise equal.
    for (int L : all.layers()) {
      QVERIFY(at::equal(ab.count(L), all.count(L)));
      QVERIFY(at::equal(ab.coact(L), all.coact(L)));
      QVERIFY(at::equal(ab.activeHist(L), all.activeHist(L)));
      QVERIFY(at::equal(ab.categoryCount(L), all.categoryCount(L)));
      QVERIFY(at::equal(ab.max(L), all.max(L)));
      QVERIFY(at::equal(ab.sampleFfnAct(L), all.sampleFfnAct(L)));
      QVERIFY(at::equal(ab.sampleFfnIn(L), all.sampleFfnIn(L)));
      auto rel = [](const at::Tensor& a, const at::Tensor& b) {
        return ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item<double>();
      };
      const double ds = (ab.sum(L) - all.sum(L)).abs().max().item<double>();
      const double dq = rel(ab.sumsq(L), all.sumsq(L));
      const double dsoft = (ab.coactSoft(L) - all.coactSoft(L)).abs().max().item<double>();
      qInfo() << "merge layer" << L << "max diff sum" << ds << "sumsq" << dq << "soft" << dsoft;
      QVERIFY(at::equal(ab.sum(L), all.sum(L)) && at::equal(ab.sumsq(L), all.sumsq(L)));
      QVERIFY(at::equal(ab.sumExact(L), all.sumExact(L)) && at::equal(ab.sumsqExact(L), all.sumsqExact(L)));
      // The soft co-activation merges from the shards' F32 values (complete
      // recordings do not keep its exact sums): equal within F32 rounding.
      // Exact across mpirun's ranks and --resume (e2e_test_mpi).
      QVERIFY(!all.coactSoftExact(L).defined());
      QVERIFY(dsoft < 1e-4);
    }
    QVERIFY(at::equal(ab.sampleTokenIds(), all.sampleTokenIds()));
    QVERIFY(at::equal(ab.sampleDocIds(), all.sampleDocIds()));
    QVERIFY(at::equal(ab.samplePositions(), all.samplePositions()));
    // Merging shards of different models is refused.
    recordActivations(*other_, vectorSource(a), info3(), o, dir_ / "O", JobContext::none());
    try {
      mergeRecordings({dir_ / "A", dir_ / "O"}, dir_ / "AO", false, JobContext::none());
      QFAIL("merge of different models accepted");
    } catch (const FormatError& e) {
      qInfo() << e.what();
      QVERIFY(std::string(e.what()).find("fingerprint") != std::string::npos);
    }
    QVERIFY(!fs::exists(dir_ / "AO"));
  }

  void tokenBudgetCapsTheReservoir() {
    // --samples far beyond what --tokens can fill: the reservoir is allocated
    // for the budget's tokens (2e9 rows would need hundreds of GB and was
    // refused by the memory check), and every token is sampled.
    auto seqs = randomSequences(30, 16, 64, 8, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.samples = 2'000'000'000;
    o.maxTokens = 300;
    o.checkpointSeconds = 0;
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "capped", JobContext::none());
    Recording r = Recording::open(dir_ / "capped");
    QCOMPARE(r.tokens(), int64_t{300});
    QCOMPARE(r.sampleCount(), int64_t{300});
    QCOMPARE(r.manifest()["options"]["samples"].get<int64_t>(), int64_t{2'000'000'000});
    QVERIFY(at::equal(r.sampleTokenIndex(0), at::arange(300, at::kLong)));
  }

  void mergeSubsamplesWhenFull() {
    auto seqs = randomSequences(12, 20, 64, 2, 0);
    std::vector<Sequence> a(seqs.begin(), seqs.begin() + 6), b(seqs.begin() + 6, seqs.end());
    RecordOptions o;
    o.seqLen = 20;
    o.samples = 50;
    o.checkpointSeconds = 0;
    SourceInfo i;
    recordActivations(*model_, vectorSource(a), i, o, dir_ / "sA", JobContext::none());
    recordActivations(*model_, vectorSource(b), i, o, dir_ / "sB", JobContext::none());
    mergeRecordings({dir_ / "sA", dir_ / "sB"}, dir_ / "sAB", false, JobContext::none());
    Recording m = Recording::open(dir_ / "sAB");
    QCOMPARE(m.sampleCount(), int64_t{50});
    // Every merged sample row is one of the shards' rows.
    Recording ra = Recording::open(dir_ / "sA"), rb = Recording::open(dir_ / "sB");
    at::Tensor pool = at::cat({ra.sampleFfnAct(0), rb.sampleFfnAct(0)}).to(at::kFloat);
    at::Tensor got = m.sampleFfnAct(0).to(at::kFloat);
    at::Tensor match = (got.unsqueeze(1) == pool.unsqueeze(0)).all(2).any(1);  // [50]
    QVERIFY(match.all().item<bool>());
  }

  void resumeEqualsUninterrupted() {
    auto seqs = randomSequences(40, 16, 64, 5, 3);
    RecordOptions o;
    o.seqLen = 16;
    o.batch = 3;
    o.chunkSequences = 6;
    o.samples = 100;  // reservoir replacement happens (more tokens than samples)
    o.checkpointEvery = 1;
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "full", JobContext::none());
    // Interrupt at the third checkpoint (cancel is seen while writing it, so
    // the second checkpoint is the one on disk).
    int checkpoints = 0;
    JobContext job(nullptr, nullptr);
    JobContext* jp = &job;
    JobContext cancelling(nullptr, [&](const std::string& line) {
      if (line.rfind("checkpoint", 0) == 0 && ++checkpoints == 3) jp->cancel();
    });
    jp = &cancelling;
    QVERIFY_THROWS_EXCEPTION(CancelledError,
                             recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "res", cancelling));
    QVERIFY(!fs::exists(dir_ / "res"));
    QVERIFY(fs::exists(dir_ / "res.partial"));
    Recording part = Recording::open(dir_ / "res.partial", true);
    QCOMPARE(part.chunksDone(), int64_t{2});
    QVERIFY_THROWS_EXCEPTION(FormatError, Recording::open(dir_ / "res.partial"));
    // Changed options are refused with a message naming the option.
    RecordOptions changed = o;
    changed.resume = true;
    changed.active = ActiveRule::parse("threshold:0.5");
    try {
      recordActivations(*model_, vectorSource(seqs), info3(), changed, dir_ / "res", JobContext::none());
      QFAIL("resume with changed options accepted");
    } catch (const ParameterError& e) {
      qInfo() << e.what();
      QVERIFY(std::string(e.what()).find("options.active") != std::string::npos);
    }
    o.resume = true;
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "res", JobContext::none());
    QVERIFY(!fs::exists(dir_ / "res.partial"));
    compareFolders(dir_ / "full", dir_ / "res", {"stats.safetensors", "coact.safetensors", "samples.safetensors"});
    // --resume without a checkpoint is a clear error.
    QVERIFY_THROWS_EXCEPTION(IoError, recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "none",
                                                        JobContext::none()));
  }

  void cancelLeavesNothing() {
    auto seqs = randomSequences(30, 16, 64, 6, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.batch = 2;
    o.checkpointSeconds = 0;
    JobContext job;
    job.cancel();
    QVERIFY_THROWS_EXCEPTION(CancelledError,
                             recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "cancel", job));
    // Cancel in the middle, from another thread.
    JobContext job2;
    std::atomic<bool> done{false};
    std::thread t([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      job2.cancel();
    });
    std::vector<Sequence> many;
    for (int k = 0; k < 200; ++k) many.insert(many.end(), seqs.begin(), seqs.end());
    try {
      recordActivations(*model_, vectorSource(many), SourceInfo{}, o, dir_ / "cancel", job2);
    } catch (const CancelledError&) {
      done = true;
    }
    t.join();
    QVERIFY(done);
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      QVERIFY2(name.rfind("cancel", 0) != 0, name.c_str());
    }
  }

  void badInput() {
    auto seqs = randomSequences(4, 16, 64, 7, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.checkpointSeconds = 0;
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "good", JobContext::none());
    // Another model's recording.
    Recording good = Recording::open(dir_ / "good");
    try {
      good.checkModel(*other_);
      QFAIL("fingerprint mismatch accepted");
    } catch (const ParameterError& e) {  // exit 2, as route/eval/export's model checks
      qInfo() << e.what();
      QVERIFY(std::string(e.what()).find("fingerprint") != std::string::npos);
    }
    // Corrupt and truncated manifests.
    fs::copy(dir_ / "good", dir_ / "corrupt", fs::copy_options::recursive);
    std::string text = readFile(dir_ / "good" / "manifest.json");
    writeFileAtomic(dir_ / "corrupt" / "manifest.json", text.substr(0, text.size() / 2));
    try {
      Recording::open(dir_ / "corrupt");
      QFAIL("truncated manifest accepted");
    } catch (const FormatError& e) {
      qInfo() << e.what();
      QVERIFY(std::string(e.what()).find("manifest.json") != std::string::npos);
    }
    auto j = nlohmann::json::parse(text);
    j["model"].erase("d_ff");
    writeFileAtomic(dir_ / "corrupt" / "manifest.json", j.dump());
    QVERIFY_THROWS_EXCEPTION(FormatError, Recording::open(dir_ / "corrupt"));
    j = nlohmann::json::parse(text);
    j["model"]["d_ff"] = 64;  // tensors no longer match
    writeFileAtomic(dir_ / "corrupt" / "manifest.json", j.dump());
    try {
      Recording::open(dir_ / "corrupt");
      QFAIL("inconsistent manifest accepted");
    } catch (const FormatError& e) {
      qInfo() << e.what();
    }
    // Truncated tensor file.
    fs::copy(dir_ / "good", dir_ / "trunc", fs::copy_options::recursive);
    fs::resize_file(dir_ / "trunc" / "coact.safetensors", fs::file_size(dir_ / "trunc" / "coact.safetensors") / 2);
    QVERIFY_THROWS_EXCEPTION(FormatError, Recording::open(dir_ / "trunc"));
    // Bad options.
    QVERIFY_THROWS_EXCEPTION(ParameterError, ActiveRule::parse("top:0"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, ActiveRule::parse("threshold:x"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, ActiveRule::parse("mean"));
    RecordOptions badLayer = o;
    badLayer.layers = {5};
    QVERIFY_THROWS_EXCEPTION(ParameterError, recordActivations(*model_, vectorSource(seqs), SourceInfo{}, badLayer,
                                                               dir_ / "bl", JobContext::none()));
    // A sequence longer than --seq-len.
    RecordOptions shortLen = o;
    shortLen.seqLen = 4;
    QVERIFY_THROWS_EXCEPTION(ParameterError, recordActivations(*model_, vectorSource(seqs), SourceInfo{}, shortLen,
                                                               dir_ / "sl", JobContext::none()));
    // Unwritable output: a path below a regular file. Nothing partial is left.
    writeFileAtomic(dir_ / "plainfile", "x");
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "plainfile" / "rec", JobContext::none());
      QFAIL("unwritable output accepted");
    } catch (const IoError& e) {
      qInfo() << e.what();
    }
    for (const auto& e : fs::directory_iterator(dir_))
      QVERIFY2(e.path().filename().string().find(".tmp-") == std::string::npos, e.path().c_str());
    // Existing output without --force.
    QVERIFY_THROWS_EXCEPTION(IoError, recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "good",
                                                        JobContext::none()));
  }

  void activeRules() {
    auto seqs = randomSequences(6, 16, 64, 8, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.samples = 0;
    o.checkpointSeconds = 0;
    o.active = ActiveRule::parse("top:0.25");
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "top", JobContext::none());
    Recording r = Recording::open(dir_ / "top");
    // Exactly round(0.25 * 128) = 32 active neurons per token.
    at::Tensor hist = r.activeHist(0);
    QCOMPARE(hist[32].item<int64_t>(), r.tokens());
    QCOMPARE(r.activeRule().toString(), std::string("top:0.25"));
    QCOMPARE(r.sampleCount(), int64_t{0});
    QCOMPARE(r.manifest()["options"]["active"]["rule"].get<std::string>(), std::string("top_p"));
  }

  void impossibleCountsRefused() {
    auto seqs = randomSequences(8, 16, 64, 9, 3);
    RecordOptions o;
    o.seqLen = 16;
    o.samples = 20;
    o.checkpointSeconds = 0;
    o.coactStorage = RecordOptions::CoactStorage::Triangle;  // the cases marked v1 rewrite it as version 1
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "cons", JobContext::none());
    QVERIFY(Recording::open(dir_ / "cons").tokens() > 0);
    // Each edit makes the recording impossible; open() refuses it naming the
    // file and the tensor (split would otherwise partition it without a word).
    // Cases marked v1 edit the recording rewritten as format version 1 (full
    // matrices): asymmetry cannot be expressed in a packed upper triangle.
    struct Case {
      std::string name, file, expect;
      std::function<void(std::vector<std::pair<std::string, at::Tensor>>&, nlohmann::json&)> edit;
      bool v1 = false;
    };
    const std::vector<Case> cases = {
        {"negative", "coact.safetensors", "'blk.0.coact'",
         [](auto& t, auto&) { tensorNamed(t, "blk.0.coact").mul_(-1); }},
        {"negative_v1", "coact.safetensors", "'blk.0.coact'",
         [](auto& t, auto&) { tensorNamed(t, "blk.0.coact").mul_(-1); }, true},
        {"asymmetric", "coact.safetensors", "not symmetric",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.0.coact");
           c.copy_(c.tril());  // upper triangle zero, diagonal kept
         },
         true},
        {"tokens0", "stats.safetensors", "outside [0, tokens] (the manifest's tokens is 0)",
         [](auto&, auto& m) { m["tokens"] = 0; }},
        {"diagonal", "coact.safetensors", "the diagonal must equal the per-neuron active counts",
         [](auto& t, auto&) {
           at::Tensor& c = tensorNamed(t, "blk.1.coact");  // packed: (3, 3) sits at k(3, 3)
           c[upperTriangleIndex(triangleSide(c.numel()), 3, 3)] += 1;
         }},
        {"diagonal_v1", "coact.safetensors", "the diagonal must equal the per-neuron active counts",
         [](auto& t, auto&) { tensorNamed(t, "blk.1.coact")[3][3] += 1; }, true},
        {"histogram", "stats.safetensors", "'blk.0.active_hist' counts",
         [](auto& t, auto&) { tensorNamed(t, "blk.0.active_hist")[0] += 5; }},
        {"category", "stats.safetensors", "'blk.0.category_count'",
         [](auto& t, auto&) { tensorNamed(t, "blk.0.category_count")[0][0] = 1 << 20; }},
        {"sumsq", "stats.safetensors", "'blk.0.sumsq'[2]",
         [](auto& t, auto&) { tensorNamed(t, "blk.0.sumsq")[2] = -1.0; }},
        // A plausible edit of a sum that its exact accumulator contradicts.
        {"sum_exact", "stats.safetensors", "'blk.1.sum_exact' disagrees with 'blk.1.sum' at neuron 4",
         [](auto& t, auto&) { tensorNamed(t, "blk.1.sum")[4] += 0.5; }},
    };
    for (const auto& c : cases) {
      const fs::path d = dir_ / ("cons_" + c.name);
      fs::remove_all(d);
      fs::copy(dir_ / "cons", d, fs::copy_options::recursive);
      if (c.v1) toVersion1(d);
      auto tensors = loadAll(d / c.file);
      auto manifest = nlohmann::json::parse(readFile(d / "manifest.json"));
      c.edit(tensors, manifest);
      writeSafetensors(d / c.file, tensors);
      writeFileAtomic(d / "manifest.json", manifest.dump());
      try {
        Recording::open(d);
        QFAIL(("impossible recording accepted: " + c.name).c_str());
      } catch (const FormatError& e) {
        qInfo() << c.name.c_str() << "->" << e.what();
        QVERIFY2(std::string(e.what()).find(c.expect) != std::string::npos, e.what());
        QVERIFY2(std::string(e.what()).find(d.filename().string()) != std::string::npos, e.what());
      }
    }
  }

  void resumeRefusesAChangedCorpus() {
    auto seqs = randomSequences(40, 16, 64, 10, 3);
    RecordOptions o;
    o.seqLen = 16;
    o.batch = 3;
    o.chunkSequences = 6;
    o.samples = 50;
    o.checkpointEvery = 1;
    auto interrupted = [&](const fs::path& out) {
      int checkpoints = 0;
      JobContext* jp = nullptr;
      JobContext cancelling(nullptr, [&](const std::string& line) {
        if (line.rfind("checkpoint", 0) == 0 && ++checkpoints == 3) jp->cancel();
      });
      jp = &cancelling;
      try {
        recordActivations(*model_, vectorSource(seqs), info3(), o, out, cancelling);
        QFAIL("not cancelled");
      } catch (const CancelledError& e) {
        // The message says what is on disk.
        QVERIFY2(std::string(e.what()).find(out.filename().string() + ".partial (2 chunks) is kept") != std::string::npos,
                 e.what());
      }
    };
    interrupted(dir_ / "rc");
    RecordOptions r = o;
    r.resume = true;
    // A document recorded before the checkpoint was edited.
    auto edited = seqs;
    edited[4].ids[2] = (edited[4].ids[2] + 1) % 64;
    try {
      recordActivations(*model_, vectorSource(edited), info3(), r, dir_ / "rc", JobContext::none());
      QFAIL("resume over an edited corpus accepted");
    } catch (const ParameterError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).find("changed since the checkpoint") != std::string::npos, e.what());
    }
    // A corpus shorter than what the checkpoint holds.
    std::vector<Sequence> shorter(seqs.begin(), seqs.begin() + 5);
    try {
      recordActivations(*model_, vectorSource(shorter), info3(), r, dir_ / "rc", JobContext::none());
      QFAIL("resume over a shortened corpus accepted");
    } catch (const ParameterError& e) {
      QVERIFY2(std::string(e.what()).find("fewer than the 12") != std::string::npos, e.what());
    }
    // The same corpus resumes, and equals an uninterrupted run.
    recordActivations(*model_, vectorSource(seqs), info3(), r, dir_ / "rc", JobContext::none());
    recordActivations(*model_, vectorSource(seqs), info3(), o, dir_ / "rc_full", JobContext::none());
    compareFolders(dir_ / "rc_full", dir_ / "rc", {"stats.safetensors", "coact.safetensors", "samples.safetensors"});
    QCOMPARE(Recording::open(dir_ / "rc").manifest()["corpus"]["sequences_hash"],
             Recording::open(dir_ / "rc_full").manifest()["corpus"]["sequences_hash"]);
  }

  void secondWriterOfTheSameOutputIsRefused() {
    // Another process recording (or resuming) the same REC_DIR holds its lock:
    // this one stops before any work instead of both writing REC_DIR.partial.
    auto seqs = randomSequences(6, 16, 64, 14, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.checkpointEvery = 1;
    const int fd = ::open((dir_ / "busy.lock").c_str(), O_RDWR | O_CREAT, 0644);
    QVERIFY(fd >= 0);
    QCOMPARE(::flock(fd, LOCK_EX | LOCK_NB), 0);
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "busy", JobContext::none());
      QFAIL("two writers of one output");
    } catch (const IoError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).find("another moefy process is writing it") != std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "busy.partial"));
    ::close(fd);
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "busy", JobContext::none());
    QVERIFY(!fs::exists(dir_ / "busy.lock"));
  }

  void cancelInTheFinalWriteSaysWhatIsOnDisk() {
    auto seqs = randomSequences(6, 16, 64, 11, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.checkpointSeconds = 0;
    JobContext* jp = nullptr;
    JobContext job([&](const std::string& stage, double) {
      if (stage == "record: write") jp->cancel();
    }, nullptr);
    jp = &job;
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "fw", job);
      QFAIL("cancel during the final write ignored");
    } catch (const CancelledError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).find("fw was not written; no checkpoint was due") != std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "fw"));
    for (const auto& e : fs::directory_iterator(dir_))
      QVERIFY2(e.path().filename().string().rfind("fw", 0) != 0, e.path().c_str());
  }

  void outputsNeverReplaceInputs() {
    auto seqs = randomSequences(6, 16, 64, 12, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.checkpointSeconds = 0;
    o.samples = 10;
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "in1", JobContext::none());
    recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "in2", JobContext::none());
    const std::string before = readFile(dir_ / "in1" / "manifest.json");
    try {
      mergeRecordings({dir_ / "in1", dir_ / "in2"}, dir_ / "in1", true, JobContext::none());
      QFAIL("merge --out INPUT --force accepted");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("input of this command") != std::string::npos, e.what());
    }
    QCOMPARE(readFile(dir_ / "in1" / "manifest.json"), before);
    // record --out MODEL_DIR --force: another kind, refused before any work.
    RecordOptions f = o;
    f.force = true;
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, f, dir_ / "other", JobContext::none());
      QFAIL("record replaced a model folder");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("is a model folder, not a recording") != std::string::npos, e.what());
    }
    QVERIFY(fs::exists(dir_ / "other" / "config.json"));
    // Nor the model it records.
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, f, dir_ / "model", JobContext::none());
      QFAIL("record replaced its own model");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("input of this command") != std::string::npos, e.what());
    }
  }

  void absurdSampleSizeRefusedBeforeAllocation() {
    auto seqs = randomSequences(2, 16, 64, 13, 0);
    RecordOptions o;
    o.seqLen = 16;
    o.samples = 1000000000000LL;
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "huge", JobContext::none());
      QFAIL("--samples 1e12 accepted");
    } catch (const ParameterError& e) {
      qInfo() << e.what();
      const std::string m = e.what();
      // One line: the option to change, the estimate by part, what is available.
      QVERIFY2(m.rfind("--samples: recording", 0) == 0, e.what());
      QVERIFY2(m.find("sample reservoir") != std::string::npos && m.find("is available") != std::string::npos,
               e.what());
      QVERIFY2(m.find('\n') == std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "huge"));
    // A batch whose activations cannot fit is refused by name too, before the first forward.
    o.samples = 0;
    o.batch = 100000000;
    try {
      recordActivations(*model_, vectorSource(seqs), SourceInfo{}, o, dir_ / "huge", JobContext::none());
      QFAIL("--batch 1e8 accepted");
    } catch (const ParameterError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).rfind("--batch: recording", 0) == 0, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "huge"));
  }

  void fingerprintCoversEveryWeight() {
    // A model whose FFN weights are all doubled must not pass as the original.
    const fs::path twin = dir_ / "doubled";
    fs::remove_all(twin);
    fs::copy(dir_ / "model", twin, fs::copy_options::recursive);
    auto tensors = loadAll(twin / "model.safetensors");
    int changed = 0;
    for (auto& [name, t] : tensors)
      if (name.find("mlp.c_fc.weight") != std::string::npos || name.find("mlp.c_proj.weight") != std::string::npos)
        t.mul_(2), ++changed;
    QVERIFY(changed > 0);
    writeSafetensors(twin / "model.safetensors", tensors);
    auto doubled = Model::load(twin);
    qInfo() << "fingerprints" << model_->fingerprint().c_str() << doubled->fingerprint().c_str();
    QVERIFY(doubled->fingerprint() != model_->fingerprint());
    // One changed value anywhere changes it too; an identical copy does not.
    tensors = loadAll(dir_ / "model" / "model.safetensors");
    at::Tensor& last = tensors.back().second;
    last.view({-1})[last.numel() / 2] += 1.0f;
    writeSafetensors(twin / "model.safetensors", tensors);
    QVERIFY(Model::load(twin)->fingerprint() != model_->fingerprint());
    fs::copy_file(dir_ / "model" / "model.safetensors", twin / "model.safetensors", fs::copy_options::overwrite_existing);
    QCOMPARE(Model::load(twin)->fingerprint(), model_->fingerprint());
  }

  void speedTimingCancelsWithinASecond() {
    // eval --speed: the timing loops run for --speed-seconds; cancel must not
    // wait for them (it took up to 7.2 s in the field).
    std::vector<std::vector<int64_t>> seqs(8, std::vector<int64_t>(16, 1));
    for (int which = 0; which < 2; ++which) {
      JobContext job;
      std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        job.cancel();
      });
      const auto t0 = std::chrono::steady_clock::now();
      bool cancelled = false;
      try {
        if (which == 0) forwardTokensPerSecond(*model_, nullptr, seqs, 4, 30.0, &job);
        else generationTokensPerSecond(*model_, nullptr, {1, 2, 3}, 16, 30.0, &job);
      } catch (const CancelledError&) {
        cancelled = true;
      }
      t.join();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      qInfo() << (which == 0 ? "forward" : "generation") << "timing cancelled after" << secs << "s";
      QVERIFY(cancelled);
      QVERIFY(secs < 1.0);
    }
  }

  void speedTimingInterleavesOverrides() {
    // eval --speed times a candidate and its dense baseline in one call, run
    // by run (A B B A ...), so that a drift in the machine's speed falls on
    // both: timing the baseline once, first, let a CI machine that sped up
    // make a MoE with every expert active look 1.2x "faster" than dense.
    struct Tagged : FfnOverride {
      char tag;
      std::string* log;
      Tagged(char t, std::string* l) : tag(t), log(l) {}
      at::Tensor forward(int layer, const at::Tensor& x, at::Tensor*) const override {
        if (layer == 0) *log += tag;
        return at::zeros_like(x);
      }
    };
    std::string log;
    auto a = std::make_shared<const Tagged>('A', &log);
    auto b = std::make_shared<const Tagged>('B', &log);
    std::vector<std::vector<int64_t>> seqs(2, std::vector<int64_t>(8, 1));
    // One batch per run: each forward is one run, after one warm-up each.
    const auto fwd = forwardSpeeds(*model_, {a, b}, seqs, 2, 0.0, 4);
    qInfo() << "forward order" << log.c_str();
    QCOMPARE(log, std::string("AB"
                              "ABBAABBA"));
    QCOMPARE(fwd.size(), size_t(2));
    QCOMPARE(fwd[0].runs, 4);
    QCOMPARE(fwd[1].runs, 4);
    QVERIFY(fwd[0].min > 0 && fwd[0].min <= fwd[0].median && fwd[0].median <= fwd[0].max);
    QVERIFY(model_->ffnOverride() == nullptr);  // restored
    // Generation: one token per run, the prompt untimed but run too.
    log.clear();
    const auto gen = generationSpeeds(*model_, {a, b}, {1, 2}, 1, 0.0, 3);
    qInfo() << "generation order" << log.c_str();
    QCOMPARE(log, std::string("AABB"
                              "AABBBBAAAABB"));
    QCOMPARE(gen[1].runs, 3);
    // Runs go on until each override has minSeconds of them.
    const auto t0 = std::chrono::steady_clock::now();
    const auto longer = forwardSpeeds(*model_, {a, nullptr}, seqs, 2, 0.05, 3);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    qInfo() << "0.05 s each: runs" << longer[0].runs << longer[1].runs << "in" << secs << "s";
    QVERIFY(longer[0].runs == longer[1].runs && longer[0].runs >= 3);
    QVERIFY(secs >= 2 * 0.05);
    bool threw = false;
    try {
      forwardSpeeds(*model_, {}, seqs, 2, 0.0, 3);
    } catch (const ParameterError& e) {
      threw = std::string(e.what()).find("no FFN to time") != std::string::npos;
    }
    QVERIFY(threw);
  }

  void interleavedSecondsAlternates() {
    // The model-free timing loop under eval --speed and the benchmarks.
    std::string log;
    auto tagged = [&](char c, double s) {
      return [&log, c, s] {
        log += c;
        return s;
      };
    };
    const auto secs = interleavedSeconds({tagged('A', 0.01), tagged('B', 0.02), tagged('C', 0.0)}, 0.0, 3);
    QCOMPARE(log, std::string("ABC"
                              "CBA"
                              "ABC"));
    QCOMPARE(secs.size(), size_t(3));
    QCOMPARE(secs[1], std::vector<double>(3, 0.02));
    // Until each has minSeconds of runs: A reports 0.125 s a run (exact in
    // binary), so 8 rounds for 1 s; B runs as often.
    log.clear();
    const auto longer = interleavedSeconds({tagged('A', 0.125), tagged('B', 0.5)}, 1.0, 2);
    QCOMPARE(longer[0].size(), size_t(8));
    QCOMPARE(longer[1].size(), size_t(8));
    QCOMPARE(medianOf({3.0, 1.0, 2.0}), 2.0);
    QCOMPARE(medianOf({}), 0.0);
    for (auto bad : {std::make_pair(0, 0.0), std::make_pair(1, -1.0), std::make_pair(1, std::nan(""))}) {
      bool threw = false;
      try {
        interleavedSeconds({tagged('A', 0.0)}, bad.second, bad.first);
      } catch (const ParameterError&) {
        threw = true;
      }
      QVERIFY2(threw, "minRuns < 1 and a negative or NaN minSeconds must be refused");
    }
    bool threw = false;
    try {
      interleavedSeconds({}, 0.0, 1);
    } catch (const ParameterError& e) {
      threw = std::string(e.what()).find("nothing to time") != std::string::npos;
    }
    QVERIFY(threw);
  }
};

QTEST_GUILESS_MAIN(TestRecord)
#include "test_record.moc"
