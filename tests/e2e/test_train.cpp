// moefy train on a tiny GPT-2 ReLU model: the loss goes down, the held-out loss
// is reported, the folder loads as a model, and cancel + --resume reproduces an
// uninterrupted run. A tiny Mixtral (native MoE) trains with the load-balancing
// and z losses: gradients reach the router and the experts, the log and
// training.json carry the router losses and expert usage, and the written model
// reproduces the trained parameters' logits. CI never trains the shipped
// models; this takes seconds.
#include <ATen/ATen.h>
#include <QtTest>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/router_loss.h"
#include "analysis/train/train_options.h"
#include "analysis/train/trainer.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

// The router logits and top-k selections of every MoE layer of one forward pass.
class RoutingCapture : public HookSink {
 public:
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site& s, HookPoint p) const override {
    return s.stack == SiteStack::Single && s.expert < 0 && !s.shared &&
           (p == HookPoint::RouterLogits || p == HookPoint::TopkIds);
  }
  void onSite(const Site&, HookPoint p, const at::Tensor& x) override {
    (p == HookPoint::RouterLogits ? logits : ids).push_back(x);
  }
  std::vector<at::Tensor> logits, ids;  // per MoE layer: [B, T, E], [B, T, k]
};

class TestTrain : public QObject {
  Q_OBJECT
  fs::path dir_;

  // The tiny Mixtral of mixtralTrains (and of the --resume check after it).
  TrainOptions moeOptions(const std::string& out, int64_t steps) const {
    TrainOptions o = options(out, steps);
    o.config = dir_ / "mixtral.json";
    o.weightDecay = 0;  // weights then move only where gradients arrive
    o.zLossCoef = 1e-3;
    o.checkpointEvery = 50;
    return o;
  }

  QStringList cliTrain(const fs::path& config, const std::string& out) const {
    return {"train",       QString::fromStdString((dir_ / "corpus").string()),
            "--config",    QString::fromStdString(config.string()),
            "--tokenizer", QString::fromStdString((dir_ / "tokenizer.json").string()),
            "--out",       QString::fromStdString((dir_ / out).string()),
            "--steps",     "3",
            "--batch",     "2",
            "--seq-len",   "16",
            "--quiet"};
  }

  TrainOptions options(const std::string& out, int64_t steps) const {
    TrainOptions o;
    o.corpus = dir_ / "corpus";
    o.config = dir_ / "config.json";
    o.tokenizer = dir_ / "tokenizer.json";
    o.outDir = dir_ / out;
    o.steps = steps;
    o.seed = 7;
    o.batch = 8;
    o.seqLen = 32;
    o.lr = 3e-3;
    o.logEvery = 5;
    o.evalEvery = 20;
    o.evalTokens = 2048;
    o.checkpointEvery = 10;
    return o;
  }

 private Q_SLOTS:
  void initTestCase() {
    // One thread: the CI machine (and this 2-core one) is shared, and OpenMP threads
    // spinning on busy cores slow small models down by 10x or more.
    qputenv("MOEFY_THREADS", "1");
    configureRuntime();
    dir_ = test::freshDir("train_e2e");
    // Corpus: 12 Brown training documents (every 40th), about 150 KB.
    auto files = corpusTextFiles(test::sourceDir() / "data" / "corpus" / "brown" / "train");
    fs::create_directories(dir_ / "corpus");
    for (size_t i = 0; i < files.size(); i += 40) fs::copy_file(files[i], dir_ / "corpus" / files[i].filename());
    BpeTrainOptions bo;
    bo.vocabSize = 512;
    BpeTrainer bt(bo);
    for (const auto& f : corpusTextFiles(dir_ / "corpus")) bt.addText(readFile(f));
    writeFileAtomic(dir_ / "tokenizer.json", bt.train(JobContext::none()).toTokenizerJson());
    nlohmann::json cfg = {{"model_type", "gpt2"},
                          {"architectures", {"GPT2LMHeadModel"}},
                          {"n_layer", 2},
                          {"n_embd", 64},
                          {"n_head", 4},
                          {"n_inner", 256},
                          {"n_positions", 64},
                          {"vocab_size", 512},
                          {"activation_function", "relu"},
                          {"tie_word_embeddings", true}};
    writeFileAtomic(dir_ / "config.json", cfg.dump(2));
    // A tiny Mixtral: 2 layers, 4 experts of d_ff 32, top-2, GQA, RoPE, tied embeddings.
    nlohmann::json moe = {{"model_type", "mixtral"},
                          {"architectures", {"MixtralForCausalLM"}},
                          {"num_hidden_layers", 2},
                          {"hidden_size", 64},
                          {"intermediate_size", 32},
                          {"num_attention_heads", 4},
                          {"num_key_value_heads", 2},
                          {"num_local_experts", 4},
                          {"num_experts_per_tok", 2},
                          {"max_position_embeddings", 64},
                          {"rope_theta", 10000.0},
                          {"rms_norm_eps", 1e-5},
                          {"vocab_size", 512},
                          {"tie_word_embeddings", true},
                          {"router_aux_loss_coef", 0.02},
                          {"bos_token_id", 0},
                          {"eos_token_id", 0}};
    writeFileAtomic(dir_ / "mixtral.json", moe.dump(2));
  }

  void lossGoesDownCli() {
    const fs::path out = dir_ / "cli";
    auto r = test::runCli({"train",        QString::fromStdString((dir_ / "corpus").string()),
                           "--config",     QString::fromStdString((dir_ / "config.json").string()),
                           "--tokenizer",  QString::fromStdString((dir_ / "tokenizer.json").string()),
                           "--out",        QString::fromStdString(out.string()),
                           "--steps",      "100",
                           "--batch",      "8",
                           "--seq-len",    "32",
                           "--lr",         "3e-3",
                           "--seed",       "1",
                           "--log-every",  "5",
                           "--eval-every", "20",
                           "--json"},
                          300);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    auto j = nlohmann::json::parse(r.out);
    double first = j["first_loss"], last = j["final_loss"], held = j["heldout_loss"];
    qInfo("loss %.4f -> %.4f over 100 steps (ln 512 = %.4f), held-out %.4f, %.0f tokens/s", first, last,
          std::log(512.0), held, j["tokens_per_s"].get<double>());
    QVERIFY(std::abs(first - std::log(512.0)) < 0.5);  // GPT-2 init starts near uniform
    QVERIFY2(last < first - 0.8, "training loss did not go down by 0.8 nats");
    QVERIFY(held < first - 0.5);
    QVERIFY(std::isfinite(j["heldout_perplexity"].get<double>()));
    // The log has train lines every 5 steps and held-out lines.
    std::istringstream log(readFile(out / "training_log.jsonl"));
    int trainLines = 0, evalLines = 0;
    for (std::string line; std::getline(log, line);) {
      auto e = nlohmann::json::parse(line);
      if (e.contains("loss")) ++trainLines;
      if (e.contains("heldout_loss")) ++evalLines;
    }
    QCOMPARE(trainLines, 20);
    QCOMPARE(evalLines, 5);  // steps 20, 40, 60, 80 and the final one
    // The result is a standard checkpoint the engine loads.
    auto m = Model::load(out);
    QCOMPARE(m->config().nLayer, 2);
    QCOMPARE(static_cast<int>(m->config().act), static_cast<int>(Activation::ReLU));
    QVERIFY(fs::exists(out / "tokenizer.json"));
    QVERIFY(fs::exists(out / "checkpoint" / "state.json"));
    // An existing output folder is refused without --resume/--force.
    auto again = test::runCli({"train", QString::fromStdString((dir_ / "corpus").string()), "--config",
                               QString::fromStdString((dir_ / "config.json").string()), "--tokenizer",
                               QString::fromStdString((dir_ / "tokenizer.json").string()), "--out",
                               QString::fromStdString(out.string()), "--steps", "5", "--seq-len", "32"});
    QVERIFY(again.exitCode != 0);
    QVERIFY2(again.err.find("already exists") != std::string::npos, again.err.c_str());
  }

  void cancelAndResumeMatchesStraightRun() {
    TrainResult straight = trainLanguageModel(options("straight", 30), JobContext::none());
    // Cancel once step 20 has been logged; the step-20 checkpoint is written first.
    JobContext* self = nullptr;
    JobContext job(nullptr, [&](const std::string& line) {
      if (line.rfind("step     20/", 0) == 0) self->cancel();
    });
    self = &job;
    try {
      trainLanguageModel(options("resumed", 30), job);
      QFAIL("not cancelled");
    } catch (const CancelledError& e) {
      // The message says what is on disk.
      QVERIFY2(std::string(e.what()).find("resumed.partial/checkpoint (step 20) is kept") != std::string::npos,
               e.what());
    }
    // The run works in MODEL_DIR.partial: nothing appears at MODEL_DIR until it completes.
    auto state = nlohmann::json::parse(readFile(dir_ / "resumed.partial" / "checkpoint" / "state.json"));
    QCOMPARE(state["step"].get<int>(), 20);
    QVERIFY(!fs::exists(dir_ / "resumed"));
    TrainOptions ro = options("resumed", 30);
    ro.resume = true;
    TrainResult resumed = trainLanguageModel(ro, JobContext::none());
    auto a = SafetensorsFile::open(dir_ / "straight" / "model.safetensors");
    auto b = SafetensorsFile::open(dir_ / "resumed" / "model.safetensors");
    double maxDiff = 0;
    for (const auto& info : a->tensors())
      maxDiff = std::max(maxDiff, (a->f32(info.name) - b->f32(info.name)).abs().max().item<double>());
    qInfo("resumed vs straight: max weight difference %.3g, held-out loss %.6f vs %.6f", maxDiff, resumed.heldoutLoss,
          straight.heldoutLoss);
    QVERIFY(maxDiff < 1e-5);
    QVERIFY(std::abs(resumed.heldoutLoss - straight.heldoutLoss) < 1e-4);
    QVERIFY(!fs::exists(dir_ / "resumed.partial"));
    // Bad resume parameters are refused by name.
    TrainOptions bad = ro;
    bad.batch = 4;
    QVERIFY_THROWS_EXCEPTION(ParameterError, trainLanguageModel(bad, JobContext::none()));
  }

  void cancelledForceKeepsPreviousModel() {
    // "straight" is a finished model (previous test). A `--force` rerun that is
    // cancelled leaves every byte of it as it was.
    const fs::path out = dir_ / "straight";
    const std::string weights = readFile(out / "model.safetensors"), summary = readFile(out / "training.json");
    JobContext* self = nullptr;
    JobContext job(nullptr, [&](const std::string& line) {
      if (line.rfind("step     10/", 0) == 0) self->cancel();
    });
    self = &job;
    TrainOptions o = options("straight", 30);
    o.force = true;
    o.seed = 8;
    QVERIFY_THROWS_EXCEPTION(CancelledError, trainLanguageModel(o, job));
    QVERIFY(readFile(out / "model.safetensors") == weights);
    QVERIFY(readFile(out / "training.json") == summary);
    QVERIFY(fs::exists(out / "checkpoint" / "state.json"));
    fs::remove_all(dir_ / "straight.partial");
    // --force replaces only a model this command trained, never another folder.
    fs::create_directories(dir_ / "notes");
    writeFileAtomic(dir_ / "notes" / "notes.txt", "keep me\n");
    TrainOptions n = options("notes", 5);
    n.force = true;
    try {
      trainLanguageModel(n, JobContext::none());
      QFAIL("a folder of notes was accepted as --out");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("refusing to replace it") != std::string::npos, e.what());
    }
    QCOMPARE(readFile(dir_ / "notes" / "notes.txt"), std::string("keep me\n"));
  }

  void absurdConfigRefusedBeforeAllocation() {
    // n_positions 1e9 would need a 1e9-row position embedding: refused naming the key.
    nlohmann::json cfg = nlohmann::json::parse(readFile(dir_ / "config.json"));
    cfg["n_positions"] = 1000000000;
    writeFileAtomic(dir_ / "huge_config.json", cfg.dump());
    TrainOptions o = options("huge", 5);
    o.config = dir_ / "huge_config.json";
    try {
      trainLanguageModel(o, JobContext::none());
      QFAIL("no error for n_positions 1e9");
    } catch (const FormatError& e) {
      QVERIFY2(std::string(e.what()).find("n_positions") != std::string::npos, e.what());
      QVERIFY2(std::string(e.what()).find("huge_config.json") != std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "huge"));
    // A folder named config.json is "a folder", not malformed JSON.
    fs::create_directories(dir_ / "dir_config" / "config.json");
    o.config = dir_ / "dir_config" / "config.json";
    try {
      trainLanguageModel(o, JobContext::none());
      QFAIL("no error for a folder named config.json");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("is a folder") != std::string::npos, e.what());
    }
  }

  void mixtralTrains() {
    const TrainResult r = trainLanguageModel(moeOptions("mixtral", 100), JobContext::none());
    const fs::path out = dir_ / "mixtral";
    qInfo(
        "mixtral: loss %.4f -> %.4f over 100 steps (ln 512 = %.4f), held-out %.4f (ppl %.1f), aux %.4f (coef %g), "
        "z %.4f (coef %g), %.0f tokens/s",
        r.firstLoss, r.finalLoss, std::log(512.0), r.heldoutLoss, r.heldoutPerplexity, r.finalAuxLoss, r.auxLossCoef,
        r.finalZLoss, r.zLossCoef, r.tokensPerSecond);
    QVERIFY(std::abs(r.firstLoss - std::log(512.0)) < 0.5);
    QVERIFY2(r.finalLoss < r.firstLoss - 0.5, "training loss did not go down by 0.5 nats");
    QVERIFY(r.heldoutLoss < r.firstLoss - 0.3);
    QCOMPARE(r.auxLossCoef, 0.02);  // the config's router_aux_loss_coef
    QCOMPARE(r.zLossCoef, 1e-3);
    // Top-2 of 4: the load-balancing loss is 2 for perfectly even routing, at most 2 x 4.
    QVERIFY(r.finalAuxLoss > 1.0 && r.finalAuxLoss < 8.0);
    QVERIFY(r.finalZLoss > 0 && std::isfinite(r.finalZLoss));
    QVERIFY(r.activeFraction.empty());
    QCOMPARE(static_cast<int>(r.expertUsage.size()), 2);
    for (const auto& u : r.expertUsage) {
      QCOMPARE(static_cast<int>(u.share.size()), 4);
      double sum = 0;
      for (double v : u.share) sum += v;
      qInfo("blk.%d: shares %.3f %.3f %.3f %.3f, usage perplexity %.3f, dead %.2f", u.layer, u.share[0], u.share[1],
            u.share[2], u.share[3], u.perplexity, u.deadShare);
      QVERIFY(std::abs(sum - 1.0) < 1e-9);
      QVERIFY(u.perplexity > 0 && u.perplexity <= 1.0 + 1e-12);
      QVERIFY(u.deadShare >= 0 && u.deadShare <= 1);
    }
    // Every train line of the log carries the (unscaled) router losses.
    std::istringstream log(readFile(out / "training_log.jsonl"));
    int trainLines = 0;
    for (std::string line; std::getline(log, line);) {
      auto e = nlohmann::json::parse(line);
      if (!e.contains("loss")) continue;
      ++trainLines;
      QVERIFY2(e.contains("aux_loss") && e["aux_loss"].get<double>() > 0, line.c_str());
      QVERIFY2(e.contains("z_loss") && e["z_loss"].get<double>() > 0, line.c_str());
    }
    QCOMPARE(trainLines, 20);
    auto summary = nlohmann::json::parse(readFile(out / "training.json"));
    QCOMPARE(summary["options"]["aux_loss_coef"].get<double>(), 0.02);
    QVERIFY(std::isfinite(summary["heldout_perplexity"].get<double>()));
    QCOMPARE(summary["heldout_expert_usage"].size(), size_t{2});
    QCOMPARE(summary["heldout_expert_usage"][1]["site"].get<std::string>(), std::string("blk.1"));
    QVERIFY(!summary.contains("heldout_active_fraction"));

    // The written model (inference mode) reproduces the logits of the final
    // parameters (the last checkpoint): bitwise-close on the same (no-grad)
    // path the trainer's held-out evaluation takes, and close on the autograd
    // path of the training steps (batched attention, other rounding).
    auto loaded = Model::load(out);
    QCOMPARE(loaded->config().expertCount, 4);
    std::map<std::string, at::Tensor> params;
    auto ck = SafetensorsFile::open(out / "checkpoint" / "model.safetensors");
    for (const auto& info : ck->tensors()) params.emplace(info.name, ck->f32(info.name));
    auto trained = Model::fromTensors(loaded->config(), params);
    trained->makeTrainable();
    Batch batch;
    batch.ids = (at::arange(64, at::kLong).view({2, 32}) * 37) % 512;
    batch.mask = at::ones_like(batch.ids);
    const at::Tensor inferred = loaded->forward(batch);
    at::Tensor noGrad;
    {
      at::NoGradGuard ng;
      noGrad = trained->forward(batch);
    }
    RoutingCapture routing;
    at::Tensor trainLogits = trained->forward(batch, &routing);
    const double diff = (noGrad - inferred).abs().max().item<double>();
    const double diffTrain = (trainLogits.detach() - inferred).abs().max().item<double>();
    qInfo("written model vs trained parameters: max |logit diff| %.3g (no-grad path), %.3g (autograd path)", diff,
          diffTrain);
    QVERIFY(diff <= 1e-6);
    QVERIFY(diffTrain <= 1e-4);

    // Gradients: the cross-entropy reaches the router (through the top-k
    // weights) and exactly the experts that received tokens; the
    // load-balancing loss alone reaches the routers but not the last layer's experts.
    QCOMPARE(static_cast<int>(routing.logits.size()), 2);
    // Targets at every position (so that every routed token reaches the loss).
    at::Tensor ce = at::cross_entropy_loss(trainLogits.reshape({-1, 512}), ((batch.ids + 1) % 512).reshape({-1}));
    ce.backward({}, true);
    auto grad = [&](Role role, int L, int e) {
      at::Tensor g = trained->tensors().at(trained->tensorName(role, L, SiteStack::Single, e)).grad();
      return g.defined() ? g.abs().max().item<double>() : 0.0;
    };
    for (int L = 0; L < 2; ++L) {
      QVERIFY2(grad(Role::MoeRouter, L, 0) > 0, "no cross-entropy gradient at the router");
      at::Tensor ids = routing.ids[L];
      for (int e = 0; e < 4; ++e) {
        const bool used = (ids == e).any().item<bool>();
        for (Role role : {Role::ExpGate, Role::ExpUp, Role::ExpDown})
          QVERIFY2((grad(role, L, e) > 0) == used, ("blk." + std::to_string(L) + ".exp." + std::to_string(e)).c_str());
      }
    }
    for (const auto& [name, t] : trained->tensors()) t.mutable_grad() = at::Tensor();
    loadBalancingLoss(routing.logits, 4, 2).backward();
    for (int L = 0; L < 2; ++L) QVERIFY2(grad(Role::MoeRouter, L, 0) > 0, "no load-balancing gradient at the router");
    // The last layer's experts feed no router: the load-balancing loss does not
    // reach them (layer 0's experts feed layer 1's router input, so it does there).
    for (int e = 0; e < 4; ++e)
      for (Role role : {Role::ExpGate, Role::ExpUp, Role::ExpDown}) QCOMPARE(grad(role, 1, e), 0.0);
  }

  void routerCoefficientsRefused() {
    // One-line errors, exit 2: a negative or malformed coefficient, or one given for a dense model.
    auto bad = [&](const fs::path& config, const QStringList& extra, const std::string& expect) {
      QStringList args = cliTrain(config, "never");
      args << extra;
      auto r = test::runCli(args, 120);
      qInfo() << extra << "->" << r.exitCode << r.err.c_str();
      QCOMPARE(r.exitCode, 2);
      QVERIFY2(r.err.find(expect) != std::string::npos, r.err.c_str());
      QCOMPARE(std::count(r.err.begin(), r.err.end(), '\n'), 1L);
      QVERIFY(!fs::exists(dir_ / "never"));
    };
    bad(dir_ / "mixtral.json", {"--aux-loss-coef", "-0.5"}, "--aux-loss-coef");
    bad(dir_ / "mixtral.json", {"--aux-loss-coef", "0.1x"}, "--aux-loss-coef: expected a finite number, got '0.1x'");
    bad(dir_ / "mixtral.json", {"--z-loss-coef", "-1"}, "--z-loss-coef");
    bad(dir_ / "config.json", {"--aux-loss-coef", "0.01"}, "dense model");
    bad(dir_ / "config.json", {"--z-loss-coef", "0"}, "dense model");
    // The library refuses them too (for callers that build TrainOptions themselves).
    TrainOptions o = options("never", 3);
    o.config = dir_ / "mixtral.json";
    o.auxLossCoef = -1;
    QVERIFY_THROWS_EXCEPTION(ParameterError, trainLanguageModel(o, JobContext::none()));
    // A config whose router_aux_loss_coef is not a number >= 0 is named.
    nlohmann::json cfg = nlohmann::json::parse(readFile(dir_ / "mixtral.json"));
    cfg["router_aux_loss_coef"] = -0.1;
    writeFileAtomic(dir_ / "bad_mixtral.json", cfg.dump());
    o = options("never", 3);
    o.config = dir_ / "bad_mixtral.json";
    try {
      trainLanguageModel(o, JobContext::none());
      QFAIL("no error for router_aux_loss_coef -0.1");
    } catch (const FormatError& e) {
      QVERIFY2(std::string(e.what()).find("router_aux_loss_coef") != std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "never"));
    // --resume with other coefficients than the checkpoint's is refused by name
    // (the mixtral model of mixtralTrains keeps its last checkpoint).
    if (!fs::exists(dir_ / "mixtral" / "checkpoint" / "state.json")) QSKIP("mixtralTrains did not leave a checkpoint");
    TrainOptions ro = moeOptions("mixtral", 100);
    ro.resume = true;
    ro.auxLossCoef = 0.5;
    try {
      trainLanguageModel(ro, JobContext::none());
      QFAIL("--resume accepted another --aux-loss-coef");
    } catch (const ParameterError& e) {
      QVERIFY2(std::string(e.what()).find("--aux-loss-coef differs") != std::string::npos, e.what());
    }
    QVERIFY(!fs::exists(dir_ / "mixtral.partial"));
    QVERIFY(fs::exists(dir_ / "mixtral" / "model.safetensors"));
  }

  void badConfig() {
    nlohmann::json cfg = nlohmann::json::parse(readFile(dir_ / "config.json"));
    cfg["vocab_size"] = 999;
    writeFileAtomic(dir_ / "bad_config.json", cfg.dump());
    TrainOptions o = options("bad", 5);
    o.config = dir_ / "bad_config.json";
    try {
      trainLanguageModel(o, JobContext::none());
      QFAIL("no error for a vocab mismatch");
    } catch (const FormatError& e) {
      QVERIFY2(std::string(e.what()).find("vocab_size 999") != std::string::npos, e.what());
    }
    o = options("bad2", 5);
    o.seqLen = 100;  // > n_positions 64
    QVERIFY_THROWS_EXCEPTION(ParameterError, trainLanguageModel(o, JobContext::none()));
  }
};

QTEST_GUILESS_MAIN(TestTrain)
#include "test_train.moc"
