#pragma once
// Which documents of which corpus a step read, and whether two steps read the
// same ones. An evaluation records its corpus (link + content fingerprint),
// split, split seed, held-out fraction, sequence count and seed in eval.json
// (docs/formats.md "Evaluation"); a recording records its corpus and split in
// manifest.json. The studio's captions ("which data is this figure on") and
// the overlap warnings of `moefy eval` and the studio come from here.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "analysis/text/corpus.h"

namespace moefy {

/// The data one step read: a corpus and the documents of it (a split).
struct DataSelection {
  std::filesystem::path corpus;   ///< absolute, normalised ("" = not recorded)
  std::string fingerprint;        ///< contentFingerprint of the corpus ("" = not recorded)
  std::optional<Split> split;     ///< nullopt = not recorded (evaluations written before the field)
  uint64_t splitSeed = 0;         ///< the seed of isHeldOut (analysis/text/corpus.h)
  double heldOutFraction = 0.05;  ///< share of documents held out (SequenceOptions default)
  bool wholeFile = false;         ///< a token-id file (.ids) or pre-tokenised input: no split applies
  int64_t sequences = -1;         ///< sequences read (-1 = not recorded)
  int64_t tokens = -1;            ///< tokens read (-1 = not recorded)
  int seqLen = 0;                 ///< window length (0 = not recorded)
  int64_t seed = -1;              ///< the step's own seed (eval: MLM masking; -1 = not recorded)
};

/// The data of an evaluation document (eval.json, any version): its corpus
/// block resolved against `evalDir` (analysis/io/links.h resolveLinkPath),
/// split, split_seed, held_out_fraction, sequences, tokens and seq_len, and
/// the top-level seed (else provenance.options.seed). Missing keys stay
/// unset (see DataSelection). A corpus ending in ".ids" counts as whole.
/// Never throws on missing keys; values are expected to have passed
/// validateEvalDocument. Thread-safe.
DataSelection evalDataSelection(const nlohmann::json& evalDoc, const std::filesystem::path& evalDir);

/// The data of a recording (manifest.json, docs/formats.md "Recording"):
/// corpus.path, corpus.fingerprint (when recorded), options.split ("all",
/// "train", "held_out") and options.seed, which seeds the recorder's split;
/// corpus.kind "tokens" counts as whole. Thread-safe.
DataSelection recordingDataSelection(const nlohmann::json& manifest);

/// One line that says which data a figure is on, for captions and reports:
///   "held-out split (seed 0, 5 % held out) of /data/brown (fingerprint 0123456789abcdef), 32 sequences of <= 128
///   tokens (4096 tokens), seed 0"
/// `brief` (a plot's subtitle): the corpus by its file or folder name, no
/// fingerprint and no split seed:
///   "held-out split of brown, 32 sequences of <= 128 tokens (4096 tokens), seed 0"
/// Unrecorded parts read "split not recorded", and so on; nothing recorded
/// at all reads "not recorded (written before evaluations recorded their data)".
std::string describeData(const DataSelection& data, bool brief = false);

/// Whether a recording's documents overlap an evaluation's.
struct DataOverlap {
  enum Verdict {
    Disjoint,  ///< different corpora, or complementary splits of one corpus
    Overlap,   ///< the evaluation reads documents the recording read
    Unknown,   ///< cannot tell: a split or corpus is not recorded, or one corpus lies inside the other
  };
  Verdict verdict = Unknown;
  int64_t sharedDocuments = -1;  ///< documents in both splits when counted, else -1
  std::string reason;            ///< one line saying why (names the corpora and splits)
};

/// Compares the documents a recording and an evaluation read. Same corpus
/// (equal fingerprints, else equal paths): a split "all" or a whole file
/// overlaps everything (even an unrecorded split); equal splits overlap; an
/// unrecorded split otherwise is Unknown; train against held-out is
/// disjoint when both used the same split seed and held-out fraction,
/// otherwise the documents in both (ids 0 .. documentCount-1 through
/// isHeldOut) are counted when `documentCount` > 0 (else Overlap).
/// Different corpora: disjoint, unless one lies inside the other's folder
/// (then Overlap when the outer one is read whole, else Unknown). Pure
/// function, thread-safe.
DataOverlap dataOverlap(const DataSelection& recording, const DataSelection& evaluation, int64_t documentCount = -1);

}  // namespace moefy
