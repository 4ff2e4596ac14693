// The tiled soft co-activation kernel (analysis/record/coact.cpp) against an
// independent numpy reference of MoEfication's definition
// (scripts/ref/soft_coact_ref.py), on both micro-kernels, on widths that are
// not multiples of the tile and strip sizes, with short and overlapping blocks.
#include <torch/torch.h>

#include <QtTest>
#include <fstream>

#include "analysis/common/error.h"
#include "analysis/record/coact.h"
#include "npy.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using test::readNpy;
using test::writeNpy;

class TestSoftCoact : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void againstNumpy_data() {
    QTest::addColumn<int>("tokens");
    QTest::addColumn<int>("n");
    QTest::newRow("one strip, 13 tokens") << 13 << 5;
    QTest::newRow("n 131, 203 tokens") << 203 << 131;
    QTest::newRow("n 389 (3 tiles, ragged), 1100 tokens") << 1100 << 389;
    QTest::newRow("n 192 (one full tile), 4500 tokens (two packed super-groups)") << 4500 << 192;
  }

  void againstNumpy() {
    QFETCH(int, tokens);
    QFETCH(int, n);
    const fs::path dir = test::freshDir("soft_coact_" + std::to_string(tokens) + "_" + std::to_string(n));
    at::manual_seed(tokens * 7 + n);
    // Mean below zero so that ReLU zeroes most entries, scaled so that many
    // block sums pass 1 and the clamp matters.
    at::Tensor h = (at::randn({tokens, n}) * 1.2 - 0.6).contiguous();
    // Sequences of uneven length cut into 8-token blocks (short last blocks),
    // plus two extra blocks that overlap others.
    std::vector<SoftBlock> blocks;
    for (int64_t s0 = 0, len = 29; s0 < tokens; s0 += len, len = len % 17 + 5)
      for (int64_t t = 0; t < std::min<int64_t>(len, tokens - s0); t += 8)
        blocks.push_back({s0 + t, std::min<int64_t>(8, std::min<int64_t>(len, tokens - s0) - t)});
    blocks.push_back({1, 3});
    blocks.push_back({tokens - 1, 1});
    at::Tensor bt = at::empty({static_cast<int64_t>(blocks.size()), 2}, at::kFloat);
    for (size_t b = 0; b < blocks.size(); ++b) {
      bt[static_cast<int64_t>(b)][0] = static_cast<float>(blocks[b].first);
      bt[static_cast<int64_t>(b)][1] = static_cast<float>(blocks[b].len);
    }
    writeNpy(dir / "h.npy", h);
    writeNpy(dir / "blocks.npy", bt);
    auto r = test::runPython({QString::fromStdString((test::sourceDir() / "scripts/ref/soft_coact_ref.py").string()),
                              QString::fromStdString((dir / "h.npy").string()),
                              QString::fromStdString((dir / "blocks.npy").string()),
                              QString::fromStdString((dir / "ref.npy").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    at::Tensor ref = readNpy(dir / "ref.npy", n, n);
    QVERIFY(ref.defined());
    QVERIFY2(ref.max().item<float>() > 1.0f, "the fixture should have pairs co-active in several blocks");

    for (CoactKernel kernel : {CoactKernel::Avx512, CoactKernel::Avx2, CoactKernel::Scalar}) {
      if (!softCoactKernelAvailable(kernel)) {
        qInfo("%s not available on this CPU: that kernel is skipped", coactKernelName(kernel));
        continue;
      }
      // Start from a non-zero symmetric S: the kernel adds.
      at::Tensor base = at::rand({n, n});
      base = (base + base.t()).contiguous();
      at::Tensor S = base.clone();
      accumulateSoftCoact(h.data_ptr<float>(), tokens, n, blocks, S.data_ptr<float>(), kernel);
      at::Tensor got = S - base;
      const double maxAbs = (got - ref).abs().max().item<double>();
      const double maxRel = ((got - ref).abs() / ref.abs().clamp_min(1.0)).max().item<double>();
      qInfo("%s kernel, tokens %d, n %d: max |kernel - numpy| = %.3g (relative %.3g)", coactKernelName(kernel), tokens,
            n, maxAbs, maxRel);
      QVERIFY2(maxRel < 1e-5, "soft co-activation differs from the numpy reference");
      QVERIFY((S - S.t()).abs().max().item<float>() == 0.0f);  // mirrored exactly
    }
  }

  void badBlocks() {
    std::vector<float> h(16 * 4, 1.0f), S(16, 0.0f);
    for (SoftBlock b : {SoftBlock{0, 9}, SoftBlock{0, 0}, SoftBlock{12, 5}, SoftBlock{-1, 2}}) {
      bool threw = false;
      try {
        accumulateSoftCoact(h.data(), 16, 4, {b}, S.data());
      } catch (const ParameterError& e) {
        threw = std::string(e.what()).find("soft co-activation block 0") != std::string::npos;
      }
      QVERIFY2(threw, "a block outside the tokens or longer than 8 must be refused");
    }
    for (float v : S) QCOMPARE(v, 0.0f);  // refused before touching S
  }
};

QTEST_GUILESS_MAIN(TestSoftCoact)
#include "test_soft_coact.moc"
