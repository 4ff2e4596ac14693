#pragma once
// Option parsing shared by `moefy record` and the studio's Record step, so
// both accept the same spellings and report the same errors.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "analysis/common/options.h"
#include "analysis/record/recorder.h"
#include "analysis/text/corpus.h"

namespace moefy {

/// The options of `moefy record` and the studio's Record step (defaults from
/// RecordOptions{}): out, tokens, seq-len, batch, layers, sites, target,
/// source-field, target-field, active, soft-coact, samples, seed, split,
/// shuffle, chunk, checkpoint-every, checkpoint-secs, resume, merge, force,
/// json, quiet.
const OptionTable& recordOptionTable();

/// RecordOptions from validated values of recordOptionTable() (everything but
/// the paths). Throws ParameterError naming the option (--layers, --active,
/// --checkpoint-every with --checkpoint-secs, ...).
RecordOptions recordOptionsFrom(const OptionValues& values);

class JobContext;
class Tokenizer;

/// "0,2,5" -> {0, 2, 5}. Blank text gives an empty list (the caller decides
/// what that means). Throws ParameterError naming `option` for an empty entry
/// (splitListValue) or an item that is not a non-negative integer.
std::vector<int> parseLayerList(const std::string& text, const std::string& option);

/// --active: "positive", "threshold:TAU" or "top:P"; blank = unset (the
/// model's default rule). Throws ParameterError for anything else.
std::optional<ActiveRule> parseActiveOption(const std::string& text);

/// --split of `moefy record`: "all", "train" or "held_out". Throws
/// ParameterError otherwise.
Split parseRecordSplit(const std::string& name);

/// The sequence source of a text corpus for recordActivations: windows of
/// o.seqLen, up to o.maxTokens tokens, o.split's documents, seeded with
/// o.seed. Fills *info (absolute path, kind, categories). `corpus`,
/// `tokenizer` and `job` must outlive the source.
SequenceSource textCorpusSource(const Corpus& corpus, const Tokenizer& tokenizer,
                                const std::filesystem::path& corpusPath, const RecordOptions& o, JobContext* job,
                                SourceInfo* info);

class ParallelCorpus;
struct ModelConfig;

/// Whether CORPUS is read as a parallel corpus for an encoder-decoder model:
/// a .tsv, a .jsonl/.ndjson, or any file with --target (o.targetFile).
/// Monolingual corpora (.txt, folders) feed the encoder only. Throws
/// ParameterError when a parallel corpus or --target is given for a
/// single-stack model, or --source-field/--target-field without a .jsonl.
bool isParallelInput(const std::filesystem::path& corpusPath, const RecordOptions& o, bool encoderDecoder);

/// Opens the parallel corpus o (CORPUS, or CORPUS and o.targetFile as
/// line-aligned files; the .jsonl fields from o). Throws as ParallelCorpus::open.
std::unique_ptr<ParallelCorpus> openParallelInput(const std::filesystem::path& corpusPath, const RecordOptions& o);

/// The pair source of a parallel corpus for recordSeq2SeqActivations: each
/// pair tokenised as T5 fine-tuning feeds it (tokenizePair: source + eos;
/// decoder input = decoder_start_token_id + the target + eos, shifted right),
/// each side cut to its first o.seqLen tokens, the pairs of o.split (pair id
/// held out as documents are), doc id = pair id, category -1. Fills *info
/// (absolute path of the corpus or the source file, kind "parallel-tsv",
/// "parallel-jsonl" or "parallel-aligned", no categories). Throws
/// ParameterError for --shuffle (pairs are visited in corpus order).
/// `corpus`, `tokenizer` and `job` must outlive the source.
PairSource parallelCorpusSource(const ParallelCorpus& corpus, const Tokenizer& tokenizer, const ModelConfig& config,
                                const RecordOptions& o, JobContext* job, SourceInfo* info);

}  // namespace moefy
