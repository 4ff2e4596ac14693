#include "analysis/text/corpus_options.h"

#include <limits>

#include "analysis/common/error.h"

namespace moefy {

const OptionTable& corpusOptionTable() {
  static const OptionTable table = [] {
    const CorpusOptions c;
    const SequenceOptions s;
    OptionTable t(
        "corpus", "describe a corpus: documents, categories, token counts",
        "moefy corpus CORPUS [--model MODEL_DIR|TOKENIZER_FILE] [--label FIELD] [--text-field F]\n"
        "                    [--seq-len N [--stride S] [--tokens N] [--seed S] [--shuffle]\n"
        "                     [--split all|train|heldout] [--held-out F]] [--no-special] [--json] [--quiet]\n",
        "CORPUS is a .txt file (documents separated by blank lines), a directory (each file one\n"
        "document, its first-level subfolder the category) or a .jsonl file (one object per line\n"
        "with a \"text\" field; --label names a category field). With --model, token counts are\n"
        "given per category; with --seq-len also the fixed-length sequences that the recorder\n"
        "would cut (stride, token budget, seeded shuffle, held-out split by document).\n");
    t.positionals({"CORPUS"}, 1)
        .text("model", "MODEL_DIR|TOKENIZER_FILE", "", "count tokens with this model's tokenizer")
        .text("label", "FIELD", c.labelField, ".jsonl: the field holding the category (empty = none)")
        .text("text-field", "FIELD", c.textField, ".jsonl: the field holding the text")
        .integerNoDefault("seq-len", "N", 2, 1 << 20, "also count the windows of N tokens (needs --model)", "256")
        .integer("stride", "S", s.stride, 0, 1 << 20, "window step (0 = --seq-len, no overlap)", "sequences")
        .integer("tokens", "N", s.tokenBudget, 0, int64_t{1} << 50, "token budget (0 = no limit)", "sequences")
        .integer("seed", "N", static_cast<int64_t>(s.seed), 0, std::numeric_limits<int64_t>::max(),
                 "shuffle and held-out seed", "sequences")
        .flag("shuffle", "visit the documents in a seeded random order", "sequences")
        .choice("split", {"all", "train", "heldout"}, "all", "which documents", {}, "sequences")
        .real("held-out", "F", s.heldOutFraction, 0, 1, "fraction of documents held out", false, "sequences")
        .flag("no-special", "do not add the tokenizer's special tokens (BOS/EOS)")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

CorpusOptions corpusOptionsFrom(const OptionValues& v) {
  CorpusOptions o;
  o.labelField = v.text("label");
  o.textField = v.text("text-field");
  return o;
}

SequenceOptions sequenceOptionsFrom(const OptionValues& v) {
  SequenceOptions so;
  so.seqLen = v.int32("seq-len");
  so.stride = v.int32("stride");
  so.tokenBudget = v.integer("tokens");
  so.seed = v.seed("seed");
  so.shuffle = v.flag("shuffle");
  so.heldOutFraction = v.real("held-out");
  so.addSpecialTokens = !v.flag("no-special");
  const std::string split = v.text("split");
  so.split = split == "train" ? Split::Train : split == "heldout" ? Split::HeldOut : Split::All;
  return so;
}

}  // namespace moefy
