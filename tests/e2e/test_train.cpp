// moefy train on a tiny GPT-2 ReLU model: the loss goes down, the held-out loss
// is reported, the folder loads as a model, and cancel + --resume reproduces an
// uninterrupted run. CI never trains the shipped model; this takes seconds.
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
#include "analysis/train/trainer.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

class TestTrain : public QObject {
  Q_OBJECT
  fs::path dir_;

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
    for (size_t i = 0; i < files.size(); i += 40)
      fs::copy_file(files[i], dir_ / "corpus" / files[i].filename());
    BpeTrainOptions bo;
    bo.vocabSize = 512;
    BpeTrainer bt(bo);
    for (const auto& f : corpusTextFiles(dir_ / "corpus")) bt.addText(readFile(f));
    writeFileAtomic(dir_ / "tokenizer.json", bt.train(JobContext::none()).toTokenizerJson());
    nlohmann::json cfg = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 2},
                          {"n_embd", 64}, {"n_head", 4}, {"n_inner", 256}, {"n_positions", 64},
                          {"vocab_size", 512}, {"activation_function", "relu"}, {"tie_word_embeddings", true}};
    writeFileAtomic(dir_ / "config.json", cfg.dump(2));
  }

  void lossGoesDownCli() {
    const fs::path out = dir_ / "cli";
    auto r = test::runCli({"train", QString::fromStdString((dir_ / "corpus").string()), "--config",
                           QString::fromStdString((dir_ / "config.json").string()), "--tokenizer",
                           QString::fromStdString((dir_ / "tokenizer.json").string()), "--out",
                           QString::fromStdString(out.string()), "--steps", "100", "--batch", "8", "--seq-len", "32",
                           "--lr", "3e-3", "--seed", "1", "--log-every", "5", "--eval-every", "20", "--json"},
                          300);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    auto j = nlohmann::json::parse(r.out);
    double first = j["first_loss"], last = j["final_loss"], held = j["heldout_loss"];
    qInfo("loss %.4f -> %.4f over 100 steps (ln 512 = %.4f), held-out %.4f, %.0f tokens/s", first, last, std::log(512.0),
          held, j["tokens_per_s"].get<double>());
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
      QVERIFY2(std::string(e.what()).find("resumed.partial/checkpoint (step 20) is kept") != std::string::npos, e.what());
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
