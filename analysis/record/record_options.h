#pragma once
// Option parsing shared by `moefy record` and the studio's Record step, so
// both accept the same spellings and report the same errors.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "analysis/common/options.h"
#include "analysis/record/recorder.h"
#include "analysis/text/corpus.h"

namespace moefy {

/// The options of `moefy record` and the studio's Record step (defaults from
/// RecordOptions{}): out, tokens, seq-len, batch, layers, active, soft-coact,
/// samples, seed, split, shuffle, chunk, checkpoint-every, checkpoint-secs,
/// resume, merge, force, json, quiet.
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
SequenceSource textCorpusSource(const Corpus& corpus, const Tokenizer& tokenizer, const std::filesystem::path& corpusPath,
                                const RecordOptions& o, JobContext* job, SourceInfo* info);

}  // namespace moefy
