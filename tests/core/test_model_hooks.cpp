// Hook subscription: a sink receives exactly the (layer, point) pairs it asks
// for, with the same values a full capture sees, and subscribing changes no
// output.
#include <QtTest>

#include <ATen/ATen.h>

#include <set>

#include "analysis/common/runtime.h"
#include "analysis/model/model.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runPython;
using moefy::test::sourceDir;

namespace {

class RecordingSink : public HookSink {
 public:
  std::set<std::pair<int, HookPoint>> subscribed;  // empty = everything
  std::map<std::pair<int, HookPoint>, at::Tensor> got;
  std::vector<std::pair<int, HookPoint>> order;
  bool wants(int layer, HookPoint p) const override { return subscribed.empty() || subscribed.count({layer, p}); }
  void on(int layer, HookPoint p, const at::Tensor& x) override {
    order.emplace_back(layer, p);
    got[{layer, p}] = x.clone();
  }
};

}  // namespace

class ModelHooks : public QObject {
  Q_OBJECT
  std::unique_ptr<Model> model_;

 private Q_SLOTS:
  void initTestCase() {
    configureRuntime();
    auto dir = freshDir("model_hooks");
    // llama_silu has 2 layers; make_checkpoint's gpt2 too. Use the gated one.
    auto r = runPython({QString::fromStdString((sourceDir() / "scripts/ref/make_checkpoint.py").string()), "llama_silu",
                        QString::fromStdString((dir / "m").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    model_ = Model::load(dir / "m");
    QCOMPARE(model_->config().nLayer, 2);
  }

  void subscribedLayersOnly() {
    Batch b = makeBatch({{5, 17, 3, 99, 42}, {8, 9}});
    RecordingSink all;
    at::Tensor ref = model_->forward(b, &all);
    QCOMPARE(all.order.size(), size_t(4));

    RecordingSink some;
    some.subscribed = {{1, HookPoint::FfnAct}, {0, HookPoint::FfnIn}};
    at::Tensor out = model_->forward(b, &some);
    QCOMPARE(some.order.size(), size_t(2));
    QVERIFY(some.order[0] == std::make_pair(0, HookPoint::FfnIn));
    QVERIFY(some.order[1] == std::make_pair(1, HookPoint::FfnAct));
    QVERIFY(at::equal(out, ref));
    for (const auto& key : some.subscribed) {
      const at::Tensor& x = some.got.at(key);
      QVERIFY(at::equal(x, all.got.at(key)));
      const int64_t width = key.second == HookPoint::FfnIn ? model_->config().dModel : model_->config().dFF;
      QCOMPARE(x.sizes().vec(), (std::vector<int64_t>{2, 5, width}));
    }

    RecordingSink none;
    none.subscribed = {{7, HookPoint::FfnIn}};  // a layer the model does not have
    at::Tensor plain = model_->forward(b, &none);
    QVERIFY(none.order.empty());
    QVERIFY(at::equal(plain, ref));
    QVERIFY(at::equal(model_->forward(b), ref));
    qInfo("full capture: %zu hooks; subscribed to 2: got %zu", all.order.size(), some.order.size());
  }
};

QTEST_GUILESS_MAIN(ModelHooks)
#include "test_model_hooks.moc"
