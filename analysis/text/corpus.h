#pragma once
// Streaming corpora and their tokenisation into fixed-length sequences.
//
// Inputs: a .txt file (documents separated by blank lines), a directory tree
// of text files (each file one document; the first-level subfolder name it is
// listed under is its category label, whatever a symbolic link points to;
// linked folders are followed, a link loop or a FIFO/device entry is refused
// naming it), or .jsonl (a "text" field, an optional label field).
// Nothing holds the whole corpus in memory: documents are read one at a time.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moefy {

class Tokenizer;
class JobContext;

struct Document {
  int64_t id = 0;         ///< 0-based index in corpus order (stable across runs)
  int32_t category = -1;  ///< index into Corpus::categories(), -1 if unlabelled
  std::string source;     ///< "file" or "file:line" for error messages and the GUI
  std::string text;       ///< UTF-8
};

struct CorpusOptions {
  std::string labelField;  ///< .jsonl: field holding the category (empty = none)
  std::string textField = "text";
};

class Corpus {
 public:
  virtual ~Corpus() = default;
  /// Opens a corpus. Scans its structure (file list, categories, document
  /// count) but not the text. Throws FormatError/IoError naming the file and
  /// line for empty corpora, binary files, missing fields, invalid JSON.
  static std::unique_ptr<Corpus> open(const std::filesystem::path& path, const CorpusOptions& options = {});

  const std::filesystem::path& path() const { return path_; }
  /// "txt", "dir" or "jsonl".
  virtual std::string kind() const = 0;
  const std::vector<std::string>& categories() const { return categories_; }
  int64_t documentCount() const { return documentCount_; }
  /// Streams documents in order; `fn` returns false to stop early.
  virtual void forEachDocument(const std::function<bool(const Document&)>& fn) const = 0;
  /// One document by id (re-reads it from disk).
  virtual Document document(int64_t id) const = 0;

 protected:
  std::filesystem::path path_;
  std::vector<std::string> categories_;
  int64_t documentCount_ = 0;
};

/// A fixed-length window of token ids cut from one document.
struct Sequence {
  std::vector<int32_t> ids;  ///< length <= seqLen (the last window of a document may be shorter)
  int64_t docId = 0;
  int32_t category = -1;
  int32_t start = 0;         ///< token offset of ids[0] within the document's encoding
  /// Share of the corpus's documents visited (skipped ones included) once this
  /// sequence's document is read, in (0, 1]; lets a consumer estimate the
  /// tokens still to come (tokens so far / sourceFraction). -1 = unknown.
  double sourceFraction = -1;
};

enum class Split { All, Train, HeldOut };

struct SequenceOptions {
  int seqLen = 256;
  int stride = 0;              ///< window step; 0 = seqLen (no overlap)
  bool addSpecialTokens = true;///< BOS/EOS per the tokenizer's post-processor
  /// Stop after this many tokens (0 = no limit). Met exactly when the corpus
  /// has enough: the last windows are trimmed (and the one before shortened
  /// when the rest would be under minLength).
  int64_t tokenBudget = 0;
  uint64_t seed = 0;
  bool shuffle = false;        ///< deterministic document order shuffle by seed
  Split split = Split::All;
  double heldOutFraction = 0.05; ///< documents held out (by a seeded hash of the id)
  int minLength = 2;           ///< drop windows shorter than this
  /// Report documents visited / documents as the job's progress. Off when the
  /// consumer reports its own progress (the recorder counts processed tokens
  /// against Sequence::sourceFraction instead).
  bool reportProgress = true;
};

/// Whether a document falls in the held-out split (deterministic in id and seed).
bool isHeldOut(int64_t docId, uint64_t seed, double fraction);

/// Tokenises documents into sequences, streaming. `fn` returns false to stop.
/// Checks job.checkCancel() between documents.
void forEachSequence(const Corpus& corpus, const Tokenizer& tokenizer, const SequenceOptions& options,
                     const std::function<bool(const Sequence&)>& fn, JobContext* job = nullptr);

/// Convenience: collects sequences (respecting the token budget) into memory.
std::vector<Sequence> collectSequences(const Corpus& corpus, const Tokenizer& tokenizer,
                                       const SequenceOptions& options, JobContext* job = nullptr);

}  // namespace moefy
