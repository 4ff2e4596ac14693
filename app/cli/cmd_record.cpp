// moefy record: activation statistics, co-activation counts and sampled rows.
#include <filesystem>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/loader.h"
#include "analysis/model/model.h"
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

nlohmann::json summaryJson(const Recording& r) {
  nlohmann::json j;
  j["out"] = r.dir().string();
  j["tokens"] = r.tokens();
  j["sequences"] = r.sequences();
  j["layers"] = r.layers();
  j["samples"] = r.sampleCount();
  j["active"] = r.activeRule().toJson();
  nlohmann::json density = nlohmann::json::object();
  for (int L : r.layers()) {
    const double c = r.count(L).sum().item<double>();
    density[std::to_string(L)] = r.tokens() > 0 ? c / (static_cast<double>(r.tokens()) * r.dFF()) : 0.0;
  }
  j["density"] = density;
  return j;
}

void printSummary(const Args& a, const Recording& r, double seconds) {
  nlohmann::json j = summaryJson(r);
  if (seconds >= 0) j["seconds"] = seconds;
  if (a.json()) {
    printJson(j);
    return;
  }
  std::cout << "wrote " << r.dir().string() << ": " << r.tokens() << " tokens, " << r.sequences() << " sequences, "
            << r.layers().size() << " layers, " << r.sampleCount() << " samples, active rule "
            << r.activeRule().toString() << "\n";
  for (int L : r.layers())
    std::cout << "  layer " << L << ": density " << j["density"][std::to_string(L)].get<double>() << "\n";
}

int runRecord(const Args& a) {
  auto job = makeCliJob(a);
  if (!a.has("out")) throw ParameterError("--out REC_DIR is required");
  const fs::path out = a.get("out");
  if (a.has("merge")) {
    if (a.positional.size() < 2) throw ParameterError("--merge needs at least two recordings: --merge A B --out C");
    std::vector<fs::path> in(a.positional.begin(), a.positional.end());
    mergeRecordings(in, out, a.has("force"), *job);
    printSummary(a, Recording::open(out), -1);
    return 0;
  }
  const fs::path modelDir = a.pos(0, "MODEL_DIR");
  const fs::path corpusPath = a.pos(1, "CORPUS");

  RecordOptions o;
  o.seqLen = static_cast<int>(a.getInt("seq-len", 256));
  o.batch = static_cast<int>(a.getInt("batch", 8));
  if (a.has("layers")) {
    o.layers = parseLayerList(a.get("layers"), "--layers");
    if (o.layers.empty()) throw ParameterError("--layers: empty list");
  }
  if (a.has("active")) o.active = parseActiveOption(a.get("active"));
  o.softCoact = a.has("soft-coact");
  o.samples = a.getInt("samples", RecordOptions{}.samples);
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  o.split = a.get("split", "all");
  o.maxTokens = a.getInt("tokens", 0);
  o.shuffle = a.has("shuffle");
  o.chunkSequences = static_cast<int>(a.getInt("chunk", 64));
  o.checkpointEvery = static_cast<int>(a.getInt("checkpoint-every", 0));
  o.checkpointSeconds = a.getDouble("checkpoint-secs", 300);
  o.resume = a.has("resume");
  o.force = a.has("force");
  parseRecordSplit(o.split);  // validates

  job->setStage("load model");
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is a MoE export; record the dense model it came from");
  SourceInfo info;
  SequenceSource source;
  std::unique_ptr<Corpus> corpus;
  const fs::path absCorpus = fs::absolute(corpusPath).lexically_normal();
  if (corpusPath.extension() == ".safetensors") {
    if (o.split != "all") throw ParameterError("--split applies to text corpora, not to pre-tokenised files");
    if (o.shuffle) throw ParameterError("--shuffle applies to text corpora, not to pre-tokenised files");
    source = tokenFileSource(absCorpus, info, o.maxTokens);
  } else {
    if (!loaded.tokenizer)
      throw FormatError(modelDir.string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                        "); give a pre-tokenised .safetensors file as CORPUS instead");
    corpus = Corpus::open(absCorpus);
    source = textCorpusSource(*corpus, *loaded.tokenizer, absCorpus, o, job.get(), &info);
  }
  RecordSummary s = recordActivations(*loaded.model, source, info, o, out, *job);
  printSummary(a, Recording::open(out), s.seconds);
  return 0;
}

CommandRegistrar recordCmd(
    {"record", "record activation statistics, co-activations and samples over a corpus",
     "usage: moefy record MODEL_DIR CORPUS --out REC_DIR [--tokens N] [--seq-len S] [--batch B]\n"
     "                    [--layers 0,1,..] [--active positive|threshold:TAU|top:P] [--soft-coact]\n"
     "                    [--samples S] [--seed N] [--split all|train|held_out] [--shuffle] [--chunk SEQS]\n"
     "                    [--checkpoint-every CHUNKS | --checkpoint-secs SECS] [--resume] [--force]\n"
     "                    [--json] [--quiet]\n"
     "       moefy record --merge REC_A REC_B [REC_C ...] --out REC_DIR [--force] [--json]\n\n"
     "Streams CORPUS (a .txt/.jsonl file or a folder of text files, tokenised with the model's\n"
     "tokenizer; or a pre-tokenised .safetensors file with token_ids [N, T]) through the model and\n"
     "writes, per recorded layer: neuron count/sum/sumsq/max, the active-count histogram, per-category\n"
     "counts, exact binary co-activation counts, optionally MoEfication's soft co-activation over\n"
     "8-token blocks, and a reservoir sample of S tokens (default 8192) with ffn_in/ffn_act (F16).\n\n"
     "  --tokens N          stop after N tokens (default: whole corpus)\n"
     "  --shuffle           visit the documents in a random order seeded by --seed (with --tokens,\n"
     "                      a sample of every category instead of the corpus's first documents)\n"
     "  --seq-len S         window length (default 256)      --batch B  sequences per pass (default 8)\n"
     "  --active RULE       positive (h > 0; default for ReLU), threshold:TAU (|h| > TAU), or\n"
     "                      top:P (the P fraction of neurons with largest |h| per token; default\n"
     "                      top:0.1 for GELU/SiLU and gated FFNs)\n"
     "  --chunk SEQS        sequences per chunk, the unit of checkpoints (default 64)\n"
     "  --checkpoint-every C  write REC_DIR.partial every C chunks (default: every 300 s;\n"
     "                      --checkpoint-secs 0 disables checkpoints)\n"
     "  --resume            continue from REC_DIR.partial; refused if any option changed\n"
     "  --merge             add up recordings of the same model and options (exact statistics)\n"
     "The output folder appears atomically when the run completes. Ctrl-C cancels cleanly.\n"
     "Format: docs/formats.md; details: docs/recording-and-splitting.md.\n",
     {"json", "quiet", "force", "resume", "soft-coact", "merge", "shuffle"},
     runRecord});

}  // namespace

}  // namespace moefy::cli
