#include "analysis/record/record_options.h"

#include <limits>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/links.h"
#include "analysis/model/config.h"
#include "analysis/model/device.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace {
std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}
}  // namespace

std::vector<int> parseLayerList(const std::string& text, const std::string& option) {
  std::vector<int> out;
  for (const std::string& item : splitListValue(text, option)) {
    long long v = -1;
    try {
      size_t used = 0;
      v = std::stoll(item, &used);
      if (used != item.size()) v = -1;
    } catch (const std::exception&) {
      v = -1;
    }
    if (v < 0 || v > 1000000) throw ParameterError(option + ": '" + item + "' is not a layer index");
    out.push_back(static_cast<int>(v));
  }
  return out;
}

std::optional<ActiveRule> parseActiveOption(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty()) return std::nullopt;
  return ActiveRule::parse(t);
}

Split parseRecordSplit(const std::string& name) {
  if (name == "all") return Split::All;
  if (name == "train") return Split::Train;
  if (name == "heldout" || name == "held_out") return Split::HeldOut;  // eval, calibrate and front spell it heldout
  throw ParameterError("--split must be all, train or heldout, got '" + name + "'");
}

const OptionTable& recordOptionTable() {
  static const OptionTable table = [] {
    const RecordOptions d;
    OptionTable t("record", "record activation statistics, co-activations and samples over a corpus",
                  "moefy record MODEL_DIR CORPUS --out REC_DIR [options]\n"
                  "       moefy record --merge REC_A REC_B [REC_C ...] --out REC_DIR [--force] [--json]\n",
                  "Streams CORPUS (a .txt/.jsonl file or a folder of text files, tokenised with the model's\n"
                  "tokenizer; or a pre-tokenised .safetensors file with token_ids [N, T]) through the model and\n"
                  "writes, per recorded layer: neuron count/sum/sumsq/max, the active-count histogram, per-category\n"
                  "counts, exact binary co-activation counts, optionally MoEfication's soft co-activation over\n"
                  "8-token blocks, and a reservoir sample of tokens with ffn_in/ffn_act (F16).\n"
                  "The output folder appears atomically when the run completes. Ctrl-C cancels cleanly.\n"
                  "Data-parallel: `mpirun -np N moefy record ...` shards the chunks across N ranks and gives\n"
                  "the single-process recording bit for bit (docs/scale.md \"Several processes\").\n"
                  "Format: docs/formats.md; details: docs/recording-and-splitting.md.\n");
    t.positionals({"MODEL_DIR", "CORPUS"}, -1)
        .text("out", "REC_DIR", std::nullopt, "the recording folder to write (required)")
        .integer("tokens", "N", d.maxTokens, 0, int64_t{1} << 50, "stop after N tokens (0 = the whole corpus)")
        .integer("seq-len", "S", d.seqLen, 2, 1 << 20, "window length in tokens")
        .integer("batch", "B", d.batch, 1, 1 << 16, "sequences per forward pass")
        .text("layers", "0,1,..", "", "comma-separated layer indices to record (empty = every layer)")
        .text("sites", "SITES", "",
              "FFN sites to record, comma-separated: site names (blk.2, enc.blk.0, dec.blk.1; native MoE "
              "models: blk.1.exp.3, blk.1.shared, or blk.1 for every expert of MoE layer 1 and its routing "
              "statistics) or whole stacks (enc, dec, blk); empty = every FFN site the model has")
        .text("target", "FILE", "",
              "encoder-decoder models: the line-aligned target file of CORPUS (the source file); a .tsv or "
              ".jsonl CORPUS is parallel by itself")
        .text("source-field", "NAME", d.sourceField, "parallel .jsonl: field (or dotted path) of the source text")
        .text("target-field", "NAME", d.targetField, "parallel .jsonl: field (or dotted path) of the target text")
        .text("active", "RULE", "",
              "positive (h > 0; default for ReLU), threshold:TAU (|h| > TAU) or top:P (the P fraction of "
              "neurons with the largest |h| per token; default top:0.1 for GELU/SiLU and gated FFNs)")
        .flag("soft-coact", "also accumulate MoEfication's soft co-activation (costly: 2 d_ff^2 flops/token/layer)")
        .integer("samples", "S", d.samples, 0, 1000000000, "reservoir size of sampled tokens (0 = no samples)")
        .integer("seed", "N", static_cast<int64_t>(d.seed), 0, std::numeric_limits<int64_t>::max(),
                 "reservoir and shuffle seed")
        .choice("split", {"all", "train", "heldout", "held_out"}, d.split, "which documents of a text corpus to record")
        .flag("shuffle",
              "visit the documents in a random order seeded by --seed (with --tokens, random documents "
              "instead of the corpus's first ones; a small budget of long documents may still miss categories)")
        .integer("chunk", "SEQS", d.chunkSequences, 1, 1 << 20,
                 "sequences per chunk, the unit of checkpoints (rounded up to a multiple of --batch)")
        .integer("checkpoint-every", "C", d.checkpointEvery, 0, 1000000000,
                 "write REC_DIR.partial (under mpirun: REC_DIR.partial.rank-R-of-N per rank) every C chunks (0 = "
                 "every --checkpoint-secs)")
        .real("checkpoint-secs", "SECS", d.checkpointSeconds, 0, 1e9,
              "seconds between checkpoints when --checkpoint-every is 0 (0 = no checkpoints)")
        .flag("resume",
              "continue from REC_DIR.partial (under mpirun: each rank from its own, with the same -np); refused if "
              "any option changed")
        .flag("merge", "add up the recordings given as arguments (same model and options; exact statistics)")
        .flag("force", "replace an existing REC_DIR")
        .flag("json", "print the summary as JSON")
        .flag("quiet", "no progress lines on stderr");
    addDeviceOption(t);
    return t;
  }();
  return table;
}

RecordOptions recordOptionsFrom(const OptionValues& v) {
  RecordOptions o;
  o.device = deviceOption(v);
  o.seqLen = v.int32("seq-len");
  o.batch = v.int32("batch");
  if (v.has("layers")) {
    o.layers = parseLayerList(v.text("layers"), "--layers");
    if (o.layers.empty()) throw ParameterError("--layers: empty list");
  }
  if (v.has("sites")) {
    o.sites = splitListValue(v.text("sites"), "--sites");
    if (o.sites.empty()) throw ParameterError("--sites: empty list");
  }
  if (!o.layers.empty() && !o.sites.empty()) throw ParameterError("--layers and --sites: give one of them");
  o.targetFile = v.text("target");
  o.sourceField = v.text("source-field");
  o.targetField = v.text("target-field");
  o.active = parseActiveOption(v.text("active"));
  o.softCoact = v.flag("soft-coact");
  o.samples = v.integer("samples");
  o.seed = v.seed("seed");
  o.split = v.text("split");
  o.maxTokens = v.integer("tokens");
  o.shuffle = v.flag("shuffle");
  o.chunkSequences = v.int32("chunk");
  o.checkpointEvery = v.int32("checkpoint-every");
  o.checkpointSeconds = v.real("checkpoint-secs");
  o.resume = v.flag("resume");
  o.force = v.flag("force");
  return o;
}

SequenceSource textCorpusSource(const Corpus& corpus, const Tokenizer& tokenizer,
                                const std::filesystem::path& corpusPath, const RecordOptions& o, JobContext* job,
                                SourceInfo* info) {
  info->path = std::filesystem::absolute(corpusPath).lexically_normal().string();
  info->kind = corpus.kind();
  info->categories = corpus.categories();
  try {
    info->fingerprint = contentFingerprint(corpusPath);
  } catch (const Error&) {
    info->fingerprint.clear();  // an unreadable file fails the recording itself, with its own message
  }
  SequenceOptions so;
  so.seqLen = o.seqLen;
  so.tokenBudget = o.maxTokens;
  so.seed = o.seed;
  so.shuffle = o.shuffle;
  so.split = parseRecordSplit(o.split);
  so.reportProgress = false;  // recordActivations reports processed tokens against the corpus's estimated total
  const Corpus* cp = &corpus;
  const Tokenizer* tk = &tokenizer;
  return [cp, tk, so, job](const std::function<bool(const Sequence&)>& fn) { forEachSequence(*cp, *tk, so, fn, job); };
}

bool isParallelInput(const std::filesystem::path& corpusPath, const RecordOptions& o, bool encoderDecoder) {
  const std::string ext = corpusPath.extension().string();
  const bool jsonl = ext == ".jsonl" || ext == ".ndjson";
  const bool fields = o.sourceField != RecordOptions{}.sourceField || o.targetField != RecordOptions{}.targetField;
  if (fields && !jsonl)
    throw ParameterError("--source-field/--target-field: apply to a parallel .jsonl corpus, not to " +
                         corpusPath.string());
  if (!encoderDecoder) {
    if (!o.targetFile.empty() || ext == ".tsv" || fields)
      throw ParameterError((o.targetFile.empty() ? corpusPath.string() : "--target " + o.targetFile) +
                           ": a parallel corpus feeds encoder-decoder models; this model has a single stack");
    return false;
  }
  return !o.targetFile.empty() || ext == ".tsv" || jsonl;
}

std::unique_ptr<ParallelCorpus> openParallelInput(const std::filesystem::path& corpusPath, const RecordOptions& o) {
  if (!o.targetFile.empty()) return ParallelCorpus::openAligned(corpusPath, o.targetFile);
  ParallelCorpusOptions po;
  po.sourceField = o.sourceField;
  po.targetField = o.targetField;
  return ParallelCorpus::open(corpusPath, po);
}

PairSource parallelCorpusSource(const ParallelCorpus& corpus, const Tokenizer& tokenizer, const ModelConfig& config,
                                const RecordOptions& o, JobContext* job, SourceInfo* info) {
  if (o.shuffle) throw ParameterError("--shuffle applies to text corpora; pairs are recorded in corpus order");
  info->path = std::filesystem::absolute(corpus.path()).lexically_normal().string();
  info->kind = "parallel-" + corpus.kind();
  info->categories.clear();
  // The CORPUS file's content, as eval.json fingerprints the same argument
  // (analysis/eval/eval_data.h compares the two).
  try {
    info->fingerprint = contentFingerprint(corpus.path());
  } catch (const Error&) {
    info->fingerprint.clear();  // an unreadable file fails the recording itself, with its own message
  }
  Seq2SeqOptions so;
  so.decoderStartId = config.decoderStartId;
  so.split = parseRecordSplit(o.split);
  so.seed = o.seed;
  so.reportProgress = false;  // recordSeq2SeqActivations reports against Sequence::sourceFraction
  const ParallelCorpus* cp = &corpus;
  const Tokenizer* tk = &tokenizer;
  const size_t cut = static_cast<size_t>(o.seqLen);
  return [cp, tk, so, cut, job](const std::function<bool(const SequencePair&)>& fn) {
    const double pairs = static_cast<double>(std::max<int64_t>(1, cp->pairCount()));
    forEachTokenizedPair(
        *cp, *tk, so,
        [&](const TokenizedPair& tp) {
          SequencePair p;
          p.source.ids = tp.ids.source;
          p.decoder = tp.ids.decoderInput;
          // Each side keeps its first --seq-len tokens (the labels cut at the
          // same length shift right into exactly this decoder input).
          if (p.source.ids.size() > cut) p.source.ids.resize(cut);
          if (p.decoder.size() > cut) p.decoder.resize(cut);
          p.source.docId = tp.id;
          p.source.category = -1;
          p.source.start = 0;
          p.source.sourceFraction = static_cast<double>(tp.id + 1) / pairs;
          return fn(p);
        },
        job);
  };
}

}  // namespace moefy
