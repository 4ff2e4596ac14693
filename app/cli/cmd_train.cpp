// moefy train-tokenizer / moefy train: byte-level BPE and language-model training.
#include <chrono>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/train_options.h"
#include "analysis/train/trainer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

int runTrainTokenizer(const Args& a) {
  const std::filesystem::path corpus = a.pos(0, "CORPUS");
  const std::string out = a.text("out");
  if (out.empty()) throw ParameterError("--out: empty (the tokenizer.json to write)");
  const BpeTrainOptions opt = bpeTrainOptionsFrom(a);
  auto job = makeCliJob(a);
  auto t0 = std::chrono::steady_clock::now();
  BpeTrainer trainer(opt);
  job->setStage("count words");
  int64_t documents = 0;
  const std::string ext = corpus.extension().string();
  if (ext == ".tsv" || ext == ".jsonl" || ext == ".ndjson") {
    // A parallel corpus: both sides of every pair, one tokenizer for both languages.
    auto pc = ParallelCorpus::open(corpus);
    pc->forEachPair([&](const SentencePair& p) {
      trainer.addText(p.source);
      trainer.addText(p.target);
      documents += 2;
      if (documents % 2048 == 0) {
        job->setProgress(static_cast<double>(p.id + 1) / static_cast<double>(pc->pairCount()));
        job->checkCancel();
      }
      return true;
    });
  } else {
    auto files = corpusTextFiles(corpus);
    for (size_t i = 0; i < files.size(); ++i) {
      trainer.addText(readFile(files[i]));
      job->setProgress(static_cast<double>(i + 1) / static_cast<double>(files.size()));
      job->checkCancel();
    }
    documents = static_cast<int64_t>(files.size());
  }
  BpeModel model = trainer.train(*job);
  writeFileAtomic(out, model.toTokenizerJson());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = {{"out", out},
                      {"documents", documents},
                      {"words", trainer.totalWords()},
                      {"distinct_words", trainer.distinctWords()},
                      {"vocab", model.tokens.size()},
                      {"merges", model.merges.size()},
                      {"seconds", secs}};
  if (a.json()) {
    printJson(j);
  } else {
    std::cout << "wrote " << out << ": " << model.tokens.size() << " tokens, " << model.merges.size() << " merges from "
              << documents << " documents (" << trainer.totalWords() << " pre-tokens, " << trainer.distinctWords()
              << " distinct) in " << secs << " s\n";
  }
  return 0;
}

CommandRegistrar trainTokenizerCmd(trainTokenizerOptionTable(), runTrainTokenizer);

int runTrain(const Args& a) {
  const TrainOptions o = trainOptionsFrom(a, a.pos(0, "CORPUS"));
  if (o.config.empty()) throw ParameterError("--config: empty (an HF config.json)");
  if (o.tokenizer.empty()) throw ParameterError("--tokenizer: empty (a tokenizer.json)");
  if (o.outDir.empty()) throw ParameterError("--out: empty (the model folder to write)");
  auto job = makeCliJob(a);
  TrainResult r = trainLanguageModel(o, *job);
  nlohmann::json j = {{"out", o.outDir.string()},
                      {"steps", r.steps},
                      {"first_loss", r.firstLoss},
                      {"final_loss", r.finalLoss},
                      {"heldout_loss", r.heldoutLoss},
                      {"heldout_perplexity", r.heldoutPerplexity},
                      {"heldout_tokens", r.heldoutTokens},
                      {"train_tokens", r.trainTokens},
                      {"parameters", r.parameters},
                      {"seconds", r.seconds},
                      {"tokens_per_s", r.tokensPerSecond},
                      {"heldout_active_fraction", r.activeFraction},
                      {"heldout_active_sites", r.activeSites}};
  if (!r.expertUsage.empty()) {
    j.erase("heldout_active_fraction");
    j.erase("heldout_active_sites");
    nlohmann::json usage = nlohmann::json::array();
    for (const auto& u : r.expertUsage)
      usage.push_back(
          {{"layer", u.layer}, {"share", u.share}, {"usage_perplexity", u.perplexity}, {"dead_share", u.deadShare}});
    j["aux_loss_coef"] = r.auxLossCoef;
    j["z_loss_coef"] = r.zLossCoef;
    j["final_aux_loss"] = r.finalAuxLoss;
    j["final_z_loss"] = r.finalZLoss;
    j["heldout_expert_usage"] = usage;
  }
  if (a.json()) {
    printJson(j);
  } else {
    std::cout << "wrote " << o.outDir.string() << ": " << r.parameters << " parameters, " << r.steps << " steps, loss "
              << r.firstLoss << " -> " << r.finalLoss << ", held-out loss " << r.heldoutLoss << " (perplexity "
              << r.heldoutPerplexity << " over " << r.heldoutTokens << " tokens), " << r.tokensPerSecond
              << " tokens/s, " << r.seconds << " s\n";
  }
  return 0;
}

CommandRegistrar trainCmd(trainOptionTable(), runTrain);

}  // namespace

}  // namespace moefy::cli
