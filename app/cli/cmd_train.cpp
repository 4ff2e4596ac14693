// moefy train-tokenizer / moefy train: byte-level BPE and language-model training.
#include <chrono>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/trainer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

int runTrainTokenizer(const Args& a) {
  const std::filesystem::path corpus = a.pos(0, "CORPUS");
  const std::string out = a.get("out");
  if (out.empty()) throw ParameterError("--out: missing (the tokenizer.json to write)");
  BpeTrainOptions opt;
  long long vocab = a.getInt("vocab", 8192);
  if (vocab < 258 || vocab > 1 << 20) throw ParameterError("--vocab: must be in [258, 1048576], got " + std::to_string(vocab));
  opt.vocabSize = static_cast<int>(vocab);
  opt.minFrequency = a.getInt("min-frequency", 2);
  if (opt.minFrequency < 1) throw ParameterError("--min-frequency: must be >= 1");
  auto job = makeCliJob(a);
  auto t0 = std::chrono::steady_clock::now();
  BpeTrainer trainer(opt);
  auto files = corpusTextFiles(corpus);
  job->setStage("count words");
  for (size_t i = 0; i < files.size(); ++i) {
    trainer.addText(readFile(files[i]));
    job->setProgress(static_cast<double>(i + 1) / static_cast<double>(files.size()));
    job->checkCancel();
  }
  BpeModel model = trainer.train(*job);
  writeFileAtomic(out, model.toTokenizerJson());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = {{"out", out},
                      {"documents", files.size()},
                      {"words", trainer.totalWords()},
                      {"distinct_words", trainer.distinctWords()},
                      {"vocab", model.tokens.size()},
                      {"merges", model.merges.size()},
                      {"seconds", secs}};
  if (a.json()) {
    printJson(j);
  } else {
    std::cout << "wrote " << out << ": " << model.tokens.size() << " tokens, " << model.merges.size() << " merges from "
              << files.size() << " documents (" << trainer.totalWords() << " pre-tokens, " << trainer.distinctWords()
              << " distinct) in " << secs << " s\n";
  }
  return 0;
}

CommandRegistrar trainTokenizerCmd(
    {"train-tokenizer", "train a byte-level BPE tokenizer and write tokenizer.json",
     "usage: moefy train-tokenizer CORPUS --out tokenizer.json [--vocab 8192] [--min-frequency 2] [--json] [--quiet]\n\n"
     "CORPUS is a .txt file or a folder (every *.txt below it, one document each).\n"
     "Trains GPT-2 style byte-level BPE: GPT-2 regex pre-tokenisation, 256 byte tokens, merges by\n"
     "pair frequency (ties to the smaller ids) until --vocab tokens or pairs rarer than\n"
     "--min-frequency. Id 0 is <|endoftext|> (BOS, EOS and padding); encode() prepends it.\n"
     "Writes a standard Hugging Face tokenizer.json (see docs/train.md).\n",
     {"json", "quiet"}, runTrainTokenizer});


int runTrain(const Args& a) {
  TrainOptions o;
  o.corpus = a.pos(0, "CORPUS");
  o.config = a.get("config");
  o.tokenizer = a.get("tokenizer");
  o.outDir = a.get("out");
  if (o.config.empty()) throw ParameterError("--config: missing (an HF config.json)");
  if (o.tokenizer.empty()) throw ParameterError("--tokenizer: missing (a tokenizer.json)");
  if (o.outDir.empty()) throw ParameterError("--out: missing (the model folder to write)");
  o.heldout = a.get("heldout");
  o.steps = a.getInt("steps", o.steps);
  long long seed = a.getInt("seed", 0);
  if (seed < 0) throw ParameterError("--seed: must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  o.batch = static_cast<int>(a.getInt("batch", o.batch));
  o.seqLen = static_cast<int>(a.getInt("seq-len", o.seqLen));
  o.lr = a.getDouble("lr", o.lr);
  o.minLrRatio = a.getDouble("min-lr-ratio", o.minLrRatio);
  o.warmup = a.getInt("warmup", o.warmup);
  o.weightDecay = a.getDouble("weight-decay", o.weightDecay);
  o.clip = a.getDouble("clip", o.clip);
  o.logEvery = a.getInt("log-every", o.logEvery);
  o.evalEvery = a.getInt("eval-every", o.evalEvery);
  o.evalTokens = a.getInt("eval-tokens", o.evalTokens);
  o.checkpointEvery = a.getInt("checkpoint-every", o.checkpointEvery);
  o.dtype = a.get("dtype", o.dtype);
  o.resume = a.has("resume");
  o.force = a.has("force");
  if (o.logEvery < 1) throw ParameterError("--log-every: must be >= 1");
  if (o.evalEvery < 0 || o.checkpointEvery < 0 || o.evalTokens < 0)
    throw ParameterError("--eval-every, --eval-tokens and --checkpoint-every must be >= 0");
  auto job = makeCliJob(a);
  TrainResult r = trainLanguageModel(o, *job);
  nlohmann::json j = {{"out", o.outDir.string()},       {"steps", r.steps},
                      {"first_loss", r.firstLoss},       {"final_loss", r.finalLoss},
                      {"heldout_loss", r.heldoutLoss},   {"heldout_perplexity", r.heldoutPerplexity},
                      {"heldout_tokens", r.heldoutTokens}, {"train_tokens", r.trainTokens},
                      {"parameters", r.parameters},      {"seconds", r.seconds},
                      {"tokens_per_s", r.tokensPerSecond},
                      {"heldout_active_fraction", r.activeFraction}};
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

CommandRegistrar trainCmd(
    {"train", "train a causal language model from scratch (libtorch autograd)",
     "usage: moefy train CORPUS --config CONFIG.json --tokenizer tokenizer.json --out MODEL_DIR\n"
     "                  [--steps 1000] [--seed 0] [--batch 16] [--seq-len 128] [--lr 1e-3] [--resume]\n"
     "                  [--heldout CORPUS] [--warmup N] [--min-lr-ratio 0.1] [--weight-decay 0.1] [--clip 1.0]\n"
     "                  [--log-every 10] [--eval-every 100] [--eval-tokens 16384] [--checkpoint-every 200]\n"
     "                  [--dtype F32|F16|BF16] [--force] [--json] [--quiet]\n\n"
     "CORPUS is a .txt file or a folder of .txt documents; each document is encoded with the\n"
     "tokenizer (BOS first) and the documents are concatenated. Steps draw --batch random windows\n"
     "of --seq-len tokens. The model (CONFIG's architecture, vocab_size = the tokenizer's size) is\n"
     "initialised GPT-2 style and trained with AdamW, linear warmup (default 5% of steps) and\n"
     "cosine decay, and global-norm gradient clipping. The held-out loss is measured every\n"
     "--eval-every steps on --heldout (default: every 20th document of CORPUS) and over all of it\n"
     "at the end. MODEL_DIR gets config.json, model.safetensors (--dtype), tokenizer.json,\n"
     "training_log.jsonl, training.json and checkpoint/ (every --checkpoint-every steps, with the\n"
     "optimiser state; --resume continues from it). Ctrl-C cancels; the last checkpoint stays.\n",
     {"json", "quiet", "resume", "force"}, runTrain});

}  // namespace

}  // namespace moefy::cli
