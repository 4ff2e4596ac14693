#pragma once
// Parallel (sequence-to-sequence) corpora: pairs of a source text and a target
// text, for encoder-decoder models (T5), and their tokenisation into encoder
// ids, teacher-forced decoder inputs and labels.
//
// Three forms, one reader (docs/tokenizers.md, "Parallel corpora"):
//   - .tsv: one pair per line, source<TAB>target. A line with no tab or more
//     than one tab is refused naming the line: a tab inside a text cannot be
//     written in .tsv (use .jsonl or two line-aligned files for such text).
//   - .jsonl / .ndjson: one JSON object per line with a source and a target
//     field (default "source" / "target"); a field name with dots that is not a
//     key of the object is looked up as a path of nested objects, so
//     "translation.de" reads {"translation": {"de": ...}}.
//   - two line-aligned files: line i of the source file pairs with line i of
//     the target file; different line counts are refused naming both counts.
// Blank lines are skipped in .tsv and .jsonl (as in a .jsonl corpus) and
// refused in line-aligned files (they would pair an empty sentence). An empty
// (blank) source or target text is refused in every form. Lines are validated
// as in corpus.h (no NUL byte, valid UTF-8; '\r\n' and a leading byte order
// mark accepted); every error is one line naming the file and line.
//
// The types are plain strings and integer ids (no tensors). Nothing holds the
// corpus in memory: opening scans it once (offsets, validation), pairs are
// re-read from disk. Every const method opens its own file streams, so one
// ParallelCorpus may be read from several threads at once.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/text/corpus.h"

namespace moefy {

class Tokenizer;
class JobContext;

struct SentencePair {
  int64_t id = 0;      ///< 0-based index in corpus order (stable across runs); the split hashes it
  int64_t line = 0;    ///< 1-based line of the pair (in both files for line-aligned files)
  std::string where;   ///< "file:line" (line-aligned: "source:line / target:line") for messages and the GUI
  std::string source;  ///< UTF-8 source text (encoder input)
  std::string target;  ///< UTF-8 target text (decoder side)
};

struct ParallelCorpusOptions {
  std::string sourceField = "source";  ///< .jsonl: field (or dotted path) of the source text
  std::string targetField = "target";  ///< .jsonl: field (or dotted path) of the target text
};

class ParallelCorpus {
 public:
  /// Opens a .tsv or .jsonl/.ndjson parallel corpus. Throws IoError (missing,
  /// unreadable, not a regular file), FormatError "FILE:LINE: ..." (no tab or
  /// several tabs, invalid JSON, not an object, missing or non-string field,
  /// empty source or target, NUL byte, invalid UTF-8, no pairs at all) and
  /// ParameterError (another extension, equal or empty field names, field
  /// options given for a .tsv).
  static std::unique_ptr<ParallelCorpus> open(const std::filesystem::path& path,
                                              const ParallelCorpusOptions& options = {});
  /// Opens two line-aligned files. Throws as open() does, FormatError
  /// "SRC has N lines, TGT has M lines" when the counts differ, "FILE:LINE:
  /// empty line" for a blank line, and ParameterError when both name one file.
  static std::unique_ptr<ParallelCorpus> openAligned(const std::filesystem::path& sourceFile,
                                                     const std::filesystem::path& targetFile);

  /// "tsv", "jsonl" or "aligned".
  const std::string& kind() const { return kind_; }
  /// The .tsv/.jsonl file, or the source file of line-aligned files.
  const std::filesystem::path& path() const { return path_; }
  /// The target file of line-aligned files (empty otherwise).
  const std::filesystem::path& targetPath() const { return targetPath_; }
  int64_t pairCount() const { return static_cast<int64_t>(starts_.size()); }

  /// Streams the pairs in order; `fn` returns false to stop early. With a
  /// split other than All only the pairs of that split are visited: the split
  /// is the corpus one, isHeldOut(pair id, seed, heldOutFraction) (corpus.h).
  /// Throws as open() does if the files changed since.
  void forEachPair(const std::function<bool(const SentencePair&)>& fn, Split split = Split::All, uint64_t seed = 0,
                   double heldOutFraction = 0.05) const;
  /// One pair by id (re-read from disk). Throws ParameterError out of range.
  SentencePair pair(int64_t id) const;

 private:
  ParallelCorpus() = default;
  SentencePair readAt(int64_t id) const;
  // Parses one .tsv/.jsonl line into source and target (throws naming file:lineNo).
  std::pair<std::string, std::string> parseLine(const std::string& line, int64_t lineNo) const;

  std::string kind_;
  std::filesystem::path path_, targetPath_;
  ParallelCorpusOptions options_;
  std::vector<std::pair<int64_t, int64_t>> starts_;     // (byte offset, line number - 1) of each pair
  std::vector<std::pair<int64_t, int64_t>> tgtStarts_;  // line-aligned: the same in the target file
};

// ---------------------------------------------------------------------------
// Tokenisation for T5-style encoder-decoder models.

/// The ids of one pair as Hugging Face's T5 fine-tuning feeds them.
struct Seq2SeqIds {
  std::vector<int32_t> source;        ///< encoder input ids: the source text + eos
  std::vector<int32_t> labels;        ///< the target text + eos (what the decoder predicts)
  std::vector<int32_t> decoderInput;  ///< shiftRight(labels): decoder_start_token_id, labels[0 .. n-2]
};

struct Seq2SeqOptions {
  int32_t decoderStartId = 0;  ///< the model's decoder_start_token_id (ModelConfig::decoderStartId)
  int32_t eosId = -1;          ///< end-of-sequence id; -1 = the tokenizer's eosId()
  Split split = Split::All;
  uint64_t seed = 0;
  double heldOutFraction = 0.05;  ///< pairs held out (isHeldOut of the pair id, as corpus documents)
  /// Report pairs visited / pairs as the job's progress.
  bool reportProgress = true;
};

/// tokenizer.encode(text, true) with `eosId` appended unless the ids already
/// end with it: T5TokenizerFast's template ("$A </s>") appends eos itself, the
/// SentencePiece T5Tokenizer appends it in build_inputs_with_special_tokens
/// (_add_eos_if_not_present, transformers models/t5/tokenization_t5.py); both
/// apply to text_target too. Throws ParameterError for a negative eosId.
std::vector<int32_t> encodeWithEos(const Tokenizer& tokenizer, std::string_view text, int32_t eosId);

/// Teacher forcing's decoder input: decoderStartId followed by labels without
/// their last id, the length of `labels` (transformers
/// models/t5/modeling_t5.py, T5PreTrainedModel._shift_right; labels of -100
/// would become the pad id there, moefy's labels have none). Empty labels give
/// [decoderStartId].
std::vector<int32_t> shiftRight(const std::vector<int32_t>& labels, int32_t decoderStartId);

/// encodeWithEos of both texts and shiftRight of the labels. The eos is
/// options.eosId, else tokenizer.eosId(); FormatError when neither exists.
Seq2SeqIds tokenizePair(const Tokenizer& tokenizer, std::string_view source, std::string_view target,
                        const Seq2SeqOptions& options);

/// One tokenised pair of a corpus.
struct TokenizedPair {
  int64_t id = 0;    ///< SentencePair::id
  int64_t line = 0;  ///< SentencePair::line
  Seq2SeqIds ids;
};

/// Tokenises the pairs of options.split in corpus order, streaming; `fn`
/// returns false to stop. Checks job.checkCancel() between pairs. Throws
/// ParameterError for a held-out fraction outside [0, 1].
void forEachTokenizedPair(const ParallelCorpus& corpus, const Tokenizer& tokenizer, const Seq2SeqOptions& options,
                          const std::function<bool(const TokenizedPair&)>& fn, JobContext* job = nullptr);

}  // namespace moefy
