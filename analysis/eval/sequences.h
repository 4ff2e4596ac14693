#pragma once
// Token sequences for evaluation and calibration, shared by the CLI
// (`moefy eval`, `moefy calibrate`) and the studio's pipeline dialogs.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/text/corpus.h"

namespace moefy {

class JobContext;
struct LoadedModel;

/// Token sequences from CORPUS: a text corpus (.txt, .jsonl or a folder;
/// tokenised with the model's tokenizer; `split` selects the held-out or
/// training documents) or a token-id file (".ids": one sequence per line,
/// whitespace-separated ids, used whole). Sequences are cut into windows of
/// seqLen, up to `budget` tokens (0 = all); windows shorter than 2 tokens are
/// dropped. Throws ParameterError (seqLen < 2), IoError (missing corpus) or
/// FormatError (bad id, id outside the vocabulary, no usable sequence, a text
/// corpus without tokenizer), naming the file and line.
std::vector<std::vector<int64_t>> readSequences(const std::filesystem::path& corpus, const LoadedModel& loaded,
                                                int seqLen, int64_t budget, Split split, JobContext* job);

struct Seq2SeqExample;

/// Teacher-forced pairs of a parallel corpus for an encoder-decoder model
/// (analysis/text/parallel_corpus.h: a .tsv or .jsonl CORPUS with the given
/// fields, or CORPUS and `targetFile` as line-aligned files), tokenised as
/// tokenizePair does (source + eos; labels = target + eos; decoder input =
/// decoder_start + labels shifted right), each side cut to seqLen tokens,
/// with the pair's target text (Seq2SeqExample::target, uncut),
/// the pairs of `split` in corpus order until `budget` label tokens (whole
/// pairs; 0 = all). Throws ParameterError (seqLen < 2, a single-stack model),
/// FormatError (no tokenizer, no pairs) and the parallel reader's errors.
std::vector<Seq2SeqExample> readSeq2SeqPairs(const std::filesystem::path& corpus, const std::string& targetFile,
                                             const std::string& sourceField, const std::string& targetField,
                                             const LoadedModel& loaded, int seqLen, int64_t budget, Split split,
                                             JobContext* job);

/// "heldout" / "held-out" / "held_out", "train", "all" -> Split. Throws
/// ParameterError naming `option` otherwise.
Split parseSplitName(const std::string& name, const std::string& option = "--split");
/// The split's name as the CLI spells it ("heldout", "train", "all").
const char* splitName(Split split);

/// The mask token id of the model's tokenizer ("[MASK]" or "<mask>"), -1 if
/// it has none (causal models do not need one).
int64_t maskTokenIdOf(const LoadedModel& loaded);

}  // namespace moefy
