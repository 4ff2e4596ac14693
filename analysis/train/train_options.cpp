#include "analysis/train/train_options.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "analysis/common/error.h"
#include "analysis/model/device.h"

namespace moefy {

namespace {
constexpr int64_t kMaxCount = int64_t{1} << 50;
constexpr int64_t kMaxSeed = std::numeric_limits<int64_t>::max();
}  // namespace

const OptionTable& trainOptionTable() {
  static const OptionTable table = [] {
    const TrainOptions d;
    OptionTable t("train", "train a causal language model or a T5 encoder-decoder from scratch (libtorch autograd)",
                  "moefy train CORPUS --config CONFIG.json --tokenizer tokenizer.json --out MODEL_DIR [options]\n",
                  "CORPUS is a .txt file or a folder of .txt documents; each document is encoded with the\n"
                  "tokenizer (BOS first) and the documents are concatenated. Steps draw --batch random windows\n"
                  "of --seq-len tokens. The model (CONFIG's architecture, vocab_size = the tokenizer's size) is\n"
                  "initialised GPT-2 style and trained with AdamW, linear warmup and cosine decay, and\n"
                  "global-norm gradient clipping. The held-out loss is measured every --eval-every steps on\n"
                  "--heldout (default: every 20th document of CORPUS) and over all of it at the end. MODEL_DIR\n"
                  "gets config.json, model.safetensors (--dtype), tokenizer.json, training_log.jsonl,\n"
                  "training.json and checkpoint/ (every --checkpoint-every steps, with the optimiser state;\n"
                  "--resume continues from it). Ctrl-C cancels; the last checkpoint stays.\n"
                  "Native MoE configs (mixtral, qwen2_moe, olmoe) train router, top-k routing and experts; the\n"
                  "objective adds --aux-loss-coef x the load-balancing loss (HF load_balancing_loss_func over\n"
                  "all MoE layers) and --z-loss-coef x the router z-loss (ST-MoE); the log gains aux_loss and\n"
                  "z_loss, training.json the held-out expert usage per layer.\n"
                  "Encoder-decoder configs (t5) train on a parallel CORPUS (.tsv source<TAB>target, or .jsonl)\n"
                  "with teacher forcing: --batch pairs per step (epochs of shuffled pairs), the source cut to\n"
                  "--seq-len and the target to --target-len tokens (with </s>), the target shifted right from\n"
                  "decoder_start_token_id, cross-entropy over the target tokens; --heldout is a parallel corpus\n"
                  "(default: the corpus's held-out split, 5 % of the pairs), cut the same way, so held-out losses\n"
                  "of runs with other --seq-len/--target-len do not compare. Use a tokenizer with </s>\n"
                  "(train-tokenizer --style t5). training.json gives the held-out activation sparsity of every\n"
                  "encoder and decoder FFN.\n");
    t.positionals({"CORPUS"}, 1)
        .text("config", "CONFIG.json", std::nullopt, "HF config.json of the model to train (required)")
        .text("tokenizer", "tokenizer.json", std::nullopt, "the tokenizer (required)")
        .text("out", "MODEL_DIR", std::nullopt, "the model folder to write (required)")
        .text("heldout", "CORPUS", "", "held-out corpus (empty = every 20th document of CORPUS)")
        .integer("steps", "N", d.steps, 1, kMaxCount, "optimiser steps")
        .integer("seed", "N", static_cast<int64_t>(d.seed), 0, kMaxSeed, "seed")
        .integer("batch", "B", d.batch, 1, 1 << 16, "windows (encoder-decoder: pairs) per step")
        .integer("seq-len", "S", d.seqLen, 2, 1 << 20,
                 "window length in tokens (encoder-decoder: the most source tokens)")
        .integer("target-len", "S", d.targetLen, 0, 1 << 20,
                 "encoder-decoder: the most target tokens (0 = --seq-len); longer pairs are truncated")
        .real("lr", "LR", d.lr, 0, 10, "peak learning rate", true)
        .real("min-lr-ratio", "R", d.minLrRatio, 0, 1, "the cosine decays to lr x R")
        .integer("warmup", "N", d.warmup, 0, kMaxCount, "linear warmup steps (-1 = 5% of the steps)", {}, true)
        .real("weight-decay", "W", d.weightDecay, 0, 10, "AdamW weight decay")
        .real("clip", "NORM", d.clip, 0, 1e6, "global gradient-norm clip (0 = off)")
        .integer("log-every", "N", d.logEvery, 1, kMaxCount, "steps between log lines")
        .integer("eval-every", "N", d.evalEvery, 0, kMaxCount,
                 "steps between held-out evaluations (0 = at the end only)")
        .integer("eval-tokens", "N", d.evalTokens, 0, kMaxCount, "held-out tokens per periodic evaluation")
        .integer("checkpoint-every", "N", d.checkpointEvery, 0, kMaxCount, "steps between checkpoints (0 = none)")
        .choice("dtype", {"F32", "F16", "BF16"}, d.dtype, "dtype of the final model.safetensors")
        .text("aux-loss-coef", "C", "",
              "load-balancing loss coefficient, >= 0 (empty = the config's router_aux_loss_coef; MoE only)")
        .real("z-loss-coef", "C", 0, 0, 1e6, "router z-loss coefficient (MoE only)")
        .flag("resume", "continue from MODEL_DIR/checkpoint")
        .flag("force", "allow an existing, non-empty MODEL_DIR without --resume")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    addDeviceOption(t);
    return t;
  }();
  return table;
}

TrainOptions trainOptionsFrom(const OptionValues& v, const std::filesystem::path& corpus) {
  TrainOptions o;
  o.device = deviceOption(v);
  o.corpus = corpus;
  o.config = v.text("config");
  o.tokenizer = v.text("tokenizer");
  o.outDir = v.text("out");
  o.heldout = v.text("heldout");
  o.steps = v.integer("steps");
  o.seed = v.seed("seed");
  o.batch = v.int32("batch");
  o.seqLen = v.int32("seq-len");
  o.targetLen = v.int32("target-len");
  o.lr = v.real("lr");
  o.minLrRatio = v.real("min-lr-ratio");
  o.warmup = v.integer("warmup");
  o.weightDecay = v.real("weight-decay");
  o.clip = v.real("clip");
  o.logEvery = v.integer("log-every");
  o.evalEvery = v.integer("eval-every");
  o.evalTokens = v.integer("eval-tokens");
  o.checkpointEvery = v.integer("checkpoint-every");
  o.dtype = v.text("dtype");
  if (const std::string aux = v.text("aux-loss-coef"); !aux.empty()) {
    // The whole text must be one finite number (strtod alone accepts "0.1x", "nan", "inf").
    char* end = nullptr;
    errno = 0;
    const double c = std::strtod(aux.c_str(), &end);
    if (std::isspace(static_cast<unsigned char>(aux[0])) || end == aux.c_str() || *end != '\0' || errno == ERANGE ||
        !std::isfinite(c))
      throw ParameterError("--aux-loss-coef: expected a finite number, got '" + aux + "'");
    if (c < 0) throw ParameterError("--aux-loss-coef: must be >= 0 (got " + aux + ")");
    o.auxLossCoef = c;
  }
  if (v.has("z-loss-coef")) o.zLossCoef = v.real("z-loss-coef");
  o.resume = v.flag("resume");
  o.force = v.flag("force");
  return o;
}

const OptionTable& trainTokenizerOptionTable() {
  static const OptionTable table = [] {
    const BpeTrainOptions d;
    OptionTable t("train-tokenizer", "train a byte-level BPE tokenizer and write tokenizer.json",
                  "moefy train-tokenizer CORPUS --out tokenizer.json [--vocab N] [--min-frequency N] [--style S] "
                  "[--json]\n",
                  "CORPUS is a .txt file, a folder (every *.txt below it, one document each), or a parallel\n"
                  "corpus (.tsv or .jsonl: the source and the target text of every pair are counted, for one\n"
                  "tokenizer shared by both languages). Trains byte-level BPE: GPT-2 regex pre-tokenisation,\n"
                  "256 byte tokens, merges by pair frequency (ties to the smaller ids) until --vocab tokens or\n"
                  "pairs rarer than --min-frequency. --style gpt2: id 0 is <|endoftext|> (BOS, EOS and\n"
                  "padding), encode() prepends it. --style t5: ids 0 <pad>, 1 </s>, 2 <unk> (T5's ids:\n"
                  "pad_token_id 0, eos_token_id 1), encode() appends </s>, for encoder-decoder models.\n"
                  "Writes a standard Hugging Face tokenizer.json (see docs/train.md).\n");
    t.positionals({"CORPUS"}, 1)
        .text("out", "tokenizer.json", std::nullopt, "the tokenizer file to write (required)")
        .integer("vocab", "N", d.vocabSize, 258, 1 << 20, "vocabulary size (special token + 256 bytes + merges)")
        .integer("min-frequency", "N", d.minFrequency, 1, kMaxCount, "stop when the best pair occurs less often")
        .choice("style", {"gpt2", "t5"}, "gpt2", "special tokens and template: gpt2 (BOS first) or t5 (EOS last)")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

BpeTrainOptions bpeTrainOptionsFrom(const OptionValues& v) {
  BpeTrainOptions o;
  o.vocabSize = v.int32("vocab");
  o.minFrequency = v.integer("min-frequency");
  o.style = v.text("style") == "t5" ? BpeStyle::T5 : BpeStyle::Gpt2;
  return o;
}

}  // namespace moefy
