// The device plumbing (docs/scale.md "Device") on a machine without a GPU:
// `--device` parsing and its refusals; the forward of the dense, the
// decoder-only RoPE, the encoder-decoder and a MoEfied model on PyTorch's
// meta device (tensors with shapes and no data), where a single tensor made
// on the CPU beside the model's would stop the run with a device mismatch;
// the masked ATen path the MoE FFN takes on a device, against the CPU kernel;
// and the refusals of what has CPU code only.
#include <QtTest>

#include <torch/library.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "analysis/common/error.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/model/device.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/router.h"
#include "error_of.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::errorOf;
using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::sourceDir;

namespace {

const c10::Device kMeta(c10::kMeta);

// Meta kernels (output shape and dtype only) of the five ops the forward uses
// that libtorch 1.13's C++ library lacks for the meta device (Python torch
// registers them from torch/_meta_registrations.py): index_select (so
// embedding), native_layer_norm, where, relu, abs. Registered for this test
// process only.
at::Tensor metaLike(const at::Tensor& x) { return at::empty(x.sizes(), x.options()); }
at::Tensor metaIndexSelect(const at::Tensor& self, int64_t dim, const at::Tensor& index) {
  auto sizes = self.sizes().vec();
  if (!sizes.empty()) sizes[static_cast<size_t>(c10::maybe_wrap_dim(dim, self.dim()))] = index.numel();
  return at::empty(sizes, self.options());
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> metaLayerNorm(const at::Tensor& input, c10::SymIntArrayRef normalized,
                                                             const c10::optional<at::Tensor>&,
                                                             const c10::optional<at::Tensor>&, double) {
  auto stat = input.sizes().vec();  // mean and rstd: the normalised dims kept as 1
  for (size_t i = 0; i < normalized.size(); ++i) stat[stat.size() - 1 - i] = 1;
  return {metaLike(input), at::empty(stat, input.options()), at::empty(stat, input.options())};
}
at::Tensor metaWhere(const at::Tensor& cond, const at::Tensor& self, const at::Tensor& other) {
  const auto shape = at::infer_size(at::infer_size(cond.sizes(), self.sizes()), other.sizes());
  return at::empty(shape, self.options().dtype(at::promote_types(self.scalar_type(), other.scalar_type())));
}

// Records the device and shape of every hook tensor.
class DeviceSink : public HookSink {
 public:
  std::vector<std::pair<std::string, c10::Device>> seen;
  std::map<std::string, std::vector<int64_t>> shapes;
  bool wants(int, HookPoint) const override { return true; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site&, HookPoint) const override { return true; }
  void onSite(const Site& site, HookPoint p, const at::Tensor& x) override {
    seen.emplace_back(hookName(site, p), x.device());
    shapes[hookName(site, p)] = x.sizes().vec();
  }
};

std::unique_ptr<Model> loadOn(const std::string& name, c10::Device device) {
  LoadOptions o;
  o.device = device;
  return Model::load(sourceDir() / "data" / "models" / name, o);
}

// A tiny Llama (RoPE, grouped-query attention, gated SiLU FFN, RMSNorm) from random weights.
std::unique_ptr<Model> tinyLlama(c10::Device device) {
  const int64_t D = 32, F = 64, V = 40, H = 4, KV = 2, HD = D / H;
  const ModelConfig c = ModelConfig::fromJson({{"model_type", "llama"},
                                               {"hidden_size", D},
                                               {"intermediate_size", F},
                                               {"num_hidden_layers", 2},
                                               {"num_attention_heads", H},
                                               {"num_key_value_heads", KV},
                                               {"vocab_size", V},
                                               {"max_position_embeddings", 64},
                                               {"hidden_act", "silu"},
                                               {"rms_norm_eps", 1e-5},
                                               {"tie_word_embeddings", false}},
                                              "test");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto rnd = [&](std::vector<int64_t> shape) { return at::randn(shape, gen) * 0.2; };
  std::map<std::string, at::Tensor> t;
  t["model.embed_tokens.weight"] = rnd({V, D});
  t["model.norm.weight"] = at::ones({D});
  t["lm_head.weight"] = rnd({V, D});
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    t[p + "input_layernorm.weight"] = at::ones({D});
    t[p + "post_attention_layernorm.weight"] = at::ones({D});
    t[p + "self_attn.q_proj.weight"] = rnd({H * HD, D});
    t[p + "self_attn.k_proj.weight"] = rnd({KV * HD, D});
    t[p + "self_attn.v_proj.weight"] = rnd({KV * HD, D});
    t[p + "self_attn.o_proj.weight"] = rnd({D, H * HD});
    t[p + "mlp.gate_proj.weight"] = rnd({F, D});
    t[p + "mlp.up_proj.weight"] = rnd({F, D});
    t[p + "mlp.down_proj.weight"] = rnd({D, F});
  }
  LoadOptions o;
  o.device = device;
  return Model::fromTensors(c, std::move(t), o);
}

// A MoE FFN over every layer of a single-stack model: neuron i in expert
// i % E, similarity routers, top-k 2 of E 4 (packed from the model's weights).
std::shared_ptr<MoeFfn> roundRobinMoe(const Model& model) {
  const int E = 4;
  std::vector<MoeLayer> layers;
  std::vector<FfnWeights> dense;
  for (int L = 0; L < model.config().nLayer; ++L) {
    const FfnWeights w = model.ffnWeights(L);
    const at::Tensor labels = at::arange(w.up.size(0), at::kInt).remainder(E);
    auto packed = MoeLayerWeights::pack(w, ExpertLayout::fromLabels(labels, E, "test"));
    auto r = std::make_shared<LayerRouter>();
    r->kind = RouterKind::Similarity;
    r->experts = E;
    r->centroids = similarityCentroids(*packed);
    layers.push_back({packed, r, 2});
    dense.push_back(w);
  }
  return std::make_shared<MoeFfn>(std::move(layers), std::move(dense));
}

// Runs `forward` (model, hooks) -> logits on the CPU model and its meta twin:
// the meta logits and every meta hook must be on meta, with the CPU run's shapes.
template <class F>
void verifyMetaRun(const Model& cpu, const Model& meta, F&& forward) {
  DeviceSink cs, ms;
  const at::Tensor lc = forward(cpu, &cs), lm = forward(meta, &ms);
  QVERIFY(lm.device() == kMeta);
  QCOMPARE(lm.sizes().vec(), lc.sizes().vec());
  QVERIFY(!ms.seen.empty());
  for (const auto& [name, d] : ms.seen) QVERIFY2(d == kMeta, (name + " is on " + d.str()).c_str());
  QCOMPARE(ms.shapes, cs.shapes);
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, Meta, m) {
  m.impl("index_select", metaIndexSelect);
  m.impl("native_layer_norm", metaLayerNorm);
  m.impl("where.self", metaWhere);
  m.impl("relu", metaLike);
  m.impl("abs", metaLike);
}

class DeviceTest : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void parseDeviceAcceptsTheDevicesAndNamesTheOption() {
    QVERIFY(parseDevice("cpu").is_cpu());
    for (const char* bad :
         {"gpu", "CPU", "", " cpu", "cuda:", "cuda:x", "cuda:-1", "cuda:0x", "cuda:123456789", "meta"}) {
      const std::string e = errorOf([&] { parseDevice(bad); });
      QVERIFY2(e.find("--device") != std::string::npos, (std::string(bad) + ": " + e).c_str());
    }
    QVERIFY(errorOf([] { parseDevice("gpu", "--model-device"); }).find("--model-device 'gpu'") != std::string::npos);
    // A CUDA device: this build's libtorch (Debian's is CPU-only) or the machine decides.
    for (const char* cuda : {"cuda", "cuda:0", "cuda:7"}) {
      const int n = cudaDeviceCount();
      const bool exists = n > (std::string(cuda) == "cuda:7" ? 7 : 0);
      if (exists) {
        QVERIFY(parseDevice(cuda).is_cuda());
      } else {
        const std::string e = errorOf([&] { parseDevice(cuda); });
        qInfo("%s: %s", cuda, e.c_str());
        // The message quotes the value as given ("cuda", not "cuda:0").
        QVERIFY2(e.rfind(std::string("--device ") + cuda + ": ", 0) == 0 && e.find("CUDA") != std::string::npos,
                 e.c_str());
      }
    }
  }

  // GPT-2 (learned positions, LayerNorm, tied head) and its incremental decoding.
  void dense_forwardOnMeta() {
    auto cpu = loadOn("brown-relu", c10::kCPU);
    auto meta = loadOn("brown-relu", kMeta);
    QVERIFY(meta->device() == kMeta);
    QCOMPARE(meta->fingerprint(), cpu->fingerprint());  // hashed on the host, whatever the device
    for (const auto& [name, t] : meta->tensors()) QVERIFY2(t.device() == kMeta, name.c_str());
    const Batch b = makeBatch({{5, 17, 3, 99, 42, 7}, {8, 9, 10}});
    verifyMetaRun(*cpu, *meta, [&](const Model& m, HookSink* h) { return m.forward(b, h); });
    if (QTest::currentTestFailed()) return;
    KvCache cache;
    QVERIFY(meta->forwardCached({5, 17, 3}, cache).device() == kMeta);
    const at::Tensor step = meta->forwardCached({4}, cache);
    QVERIFY(step.device() == kMeta && cache.length == 4);
    QCOMPARE(step.sizes().vec(), (std::vector<int64_t>{1, 1, cpu->config().dModel}));
  }

  // Llama: RoPE tables, grouped-query attention, RMSNorm, gated FFN.
  void rope_forwardOnMeta() {
    auto cpu = tinyLlama(c10::kCPU);
    auto meta = tinyLlama(kMeta);
    const Batch b = makeBatch({{1, 2, 3, 4, 5}, {6, 7}});
    verifyMetaRun(*cpu, *meta, [&](const Model& m, HookSink* h) { return m.forward(b, h); });
    if (QTest::currentTestFailed()) return;
  }

  // T5: relative-position buckets, both stacks, and the cached decoding steps.
  void seq2seq_forwardOnMeta() {
    auto cpu = loadOn("bible-t5", c10::kCPU);
    auto meta = loadOn("bible-t5", kMeta);
    const Batch src = makeBatch({{5, 17, 3, 99, 1}, {8, 9, 1}}), dec = makeBatch({{0, 4, 5}, {0, 6, 7}});
    verifyMetaRun(*cpu, *meta, [&](const Model& m, HookSink* h) { return m.forwardSeq2Seq(src, dec, h); });
    if (QTest::currentTestFailed()) return;
    Seq2SeqCache cache = meta->startSeq2Seq(src);
    const at::Tensor h1 = meta->decodeStep(at::zeros({2, 1}, at::kLong), cache);
    const at::Tensor h2 = meta->decodeStep(at::ones({2, 1}, at::kLong), cache);
    QVERIFY(h1.device() == kMeta && h2.device() == kMeta && cache.length == 2);
    cache.keepRows(at::tensor({1}, at::kLong));
    QCOMPARE(cache.batchSize(), int64_t{1});
    QVERIFY(meta->decodeStep(at::ones({1, 1}, at::kLong), cache).device() == kMeta);
  }

  // A MoEfied model: setFfnOverride puts the experts and routers on the
  // model's device (MoeFfn::onDevice), whose forward takes the masked path.
  void moe_forwardOnMeta() {
    auto cpu = loadOn("brown-relu", c10::kCPU);
    auto meta = loadOn("brown-relu", kMeta);
    auto moe = roundRobinMoe(*cpu);
    cpu->setFfnOverride(moe);
    meta->setFfnOverride(moe);
    QVERIFY(meta->ffnOverride() != moe);  // the device copy
    QVERIFY(std::dynamic_pointer_cast<const MoeFfn>(meta->ffnOverride())->layers()[0].weights->up.device() == kMeta);
    meta->setFfnOverride(moe);  // made once per device
    QVERIFY(meta->ffnOverride() == moe->onDevice(kMeta));
    const Batch b = makeBatch({{5, 17, 3, 99}, {8, 9}});
    verifyMetaRun(*cpu, *meta, [&](const Model& m, HookSink* h) { return m.forward(b, h); });
    if (QTest::currentTestFailed()) return;
  }

  // The arithmetic a device runs (the masked ATen path) equals the CPU kernel's.
  void moe_maskedPathMatchesKernel() {
    auto model = loadOn("brown-relu", c10::kCPU);
    auto moe = roundRobinMoe(*model);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor x = at::randn({9, model->config().dModel}, gen);
    double worst = 0, worstHidden = 0;
    for (int L = 0; L < model->config().nLayer; ++L) {
      at::Tensor hk, hm;
      const at::Tensor sel = moe->route(L, x);
      const at::Tensor yk = moe->compute(L, x, sel, &hk);       // the CPU kernel
      const at::Tensor xg = x.clone().set_requires_grad(true);  // grad mode: the masked path
      const at::Tensor ym = moe->compute(L, xg, sel, &hm).detach();
      worst = std::max(worst, (yk - ym).abs().max().item<double>());
      worstHidden = std::max(worstHidden, (hk - hm.detach()).abs().max().item<double>());
    }
    qInfo("masked path vs kernel: max |dy| %.3g, max |dh| %.3g (tolerance 1e-4)", worst, worstHidden);
    QVERIFY(worst < 1e-4 && worstHidden < 1e-4);
  }

  void cpuOnlyCodeRefusesADevice() {
    auto cpu = loadOn("brown-relu", c10::kCPU);
    auto meta = loadOn("brown-relu", kMeta);
    // The dense baseline of the speed figures is CPU kernel code.
    const std::string e = errorOf([&] { meta->setFfnOverride(std::make_shared<DenseKernelFfn>(*cpu)); });
    QVERIFY2(e.find("--device meta") != std::string::npos && e.find("CPU") != std::string::npos, e.c_str());
    QVERIFY(meta->ffnOverride() == nullptr);
    // Mapped half-precision weights are views of the file on the host.
    const auto dir = freshDir("device_f16");
    cpu->save(dir, "F16");
    LoadOptions o;
    o.device = kMeta;
    o.weights = WeightMode::Mapped;
    const std::string m = errorOf([&] { Model::load(dir, o); });
    QVERIFY2(m.find("MOEFY_WEIGHTS") != std::string::npos, m.c_str());
    o.weights = WeightMode::Auto;  // becomes Convert on a device
    QVERIFY(!Model::load(dir, o)->mappedWeights());
  }

  void cliOption() {
    const QString model = QString::fromStdString((sourceDir() / "data" / "models" / "brown-relu").string());
    const auto cpu = runCli({"forward", model, "--ids", "5,17,3", "--device", "cpu", "--json"});
    const auto plain = runCli({"forward", model, "--ids", "5,17,3", "--json"});
    QVERIFY2(cpu.exitCode == 0, cpu.err.c_str());
    QCOMPARE(cpu.out, plain.out);
    for (const char* cmd : {"forward", "record", "route", "eval", "calibrate", "train"}) {
      const auto r = runCli({QString(cmd), "--help"});
      QVERIFY2(r.out.find("--device") != std::string::npos, cmd);
    }
    // A forgotten value is not taken from the next option.
    const auto missing = runCli({"forward", model, "--device", "--ids", "5,17,3"});
    QCOMPARE(missing.exitCode, 2);
    QVERIFY2(
        missing.err.find("--device: missing value DEV (the next argument, --ids, is an option)") != std::string::npos,
        missing.err.c_str());
    const auto bad = runCli({"forward", model, "--ids", "5,17,3", "--device", "gpu"});
    QCOMPARE(bad.exitCode, 2);
    QVERIFY2(bad.err.find("--device 'gpu' is not a device") != std::string::npos, bad.err.c_str());
    if (cudaDeviceCount() == 0) {
      const auto cuda = runCli({"record", model, "corpus.txt", "--out", "x", "--device", "cuda"});
      QCOMPARE(cuda.exitCode, 2);
      QVERIFY2(cuda.err.find("--device cuda") != std::string::npos, cuda.err.c_str());
    }
  }
};

QTEST_GUILESS_MAIN(DeviceTest)
#include "test_device.moc"
