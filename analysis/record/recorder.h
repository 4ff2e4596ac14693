#pragma once
// Activation recording: streams token sequences through a model and
// accumulates, per recorded layer, neuron statistics, exact binary
// co-activation counts, optionally MoEfication's soft co-activation, and a
// reservoir sample of FFN inputs/hiddens. The state is additive (shards merge
// exactly), chunked, cancellable, and resumable from the last checkpoint.
// The artefact format is docs/formats.md "Recording"; usage is in
// docs/recording-and-splitting.md.
#include <c10/core/Device.h>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "analysis/model/config.h"
#include "analysis/record/coact.h"
#include "analysis/text/corpus.h"

namespace moefy {

class Model;
class JobContext;

/// When a neuron counts as active on a token.
struct ActiveRule {
  enum class Kind { Positive, Threshold, TopP };
  Kind kind = Kind::Positive;
  double tau = 0.0;  ///< Threshold: active when |h| > tau
  double p = 0.0;    ///< TopP: the round(p * d_ff) (at least 1) neurons with the largest |h| per token

  /// "positive", "threshold:TAU" or "top:P" (0 < P <= 1). Throws ParameterError naming --active.
  static ActiveRule parse(const std::string& text);
  /// positive for plain ReLU FFNs; top:0.1 for GELU/SiLU and every gated FFN.
  static ActiveRule defaultFor(Activation act, bool gated);
  /// {"rule": "positive"|"threshold"|"top_p", "tau": .., "p": ..}
  nlohmann::json toJson() const;
  static ActiveRule fromJson(const nlohmann::json& j, const std::string& context);
  std::string toString() const;
  bool operator==(const ActiveRule& o) const { return kind == o.kind && tau == o.tau && p == o.p; }
};

struct RecordOptions {
  /// The device the model is loaded on (--device; the caller loads it:
  /// loadModel(dir, device)). The statistics are accumulated on the host.
  c10::Device device = c10::Device(c10::kCPU);
  int seqLen = 256;         ///< window length the source was cut with (recorded; longer sequences are an error)
  int batch = 8;            ///< sequences per forward pass
  std::vector<int> layers;  ///< single-stack layers to record (--layers); empty = see `sites`
  /// FFN sites to record (--sites): names (blk.2, enc.blk.0, dec.blk.1) or
  /// stack groups (enc, dec, blk); empty (with `layers` empty) = every FFN site.
  std::vector<std::string> sites;
  // Parallel corpora (encoder-decoder models; analysis/text/parallel_corpus.h):
  std::string targetFile;              ///< --target: line-aligned target file (CORPUS is then the source file)
  std::string sourceField = "source";  ///< --source-field: .jsonl field (or dotted path) of the source text
  std::string targetField = "target";  ///< --target-field: .jsonl field (or dotted path) of the target text
  std::optional<ActiveRule> active;    ///< unset = ActiveRule::defaultFor(model)
  bool softCoact = false;     ///< also accumulate MoEfication's soft co-activation (costly: 2 d_ff^2 flops/token/layer)
  /// How coact.safetensors stores each site's co-activation matrix
  /// (docs/formats.md "Recording"): Full writes the symmetric [n, n] matrix
  /// (format version 1, read zero-copy), Triangle the packed upper triangle
  /// (version 2, half the bytes; reading expands it). Auto packs when the
  /// widest recorded site is wider than kPackCoactAbove neurons, where the
  /// counts (4 n^2 bytes per site, 64 MiB at n = 4096) dominate the folder;
  /// below that the sample reservoir dominates and the zero-copy read wins.
  enum class CoactStorage { Auto, Full, Triangle };
  static constexpr int kPackCoactAbove = 4096;
  CoactStorage coactStorage = CoactStorage::Auto;
  int64_t samples = 8192;     ///< reservoir size S (0 = no samples)
  uint64_t seed = 0;          ///< reservoir seed (and the source's shuffle seed, recorded)
  std::string split = "all";  ///< corpus split the source yields ("all", "train", "held_out"), recorded
  int64_t maxTokens = 0;      ///< stop after this many tokens (0 = whole source)
  bool shuffle = false;       ///< text corpora: visit documents in a seeded random order (recorded)
  int chunkSequences = 64;    ///< sequences per chunk (the unit of resume); rounded up to a multiple of batch
  int checkpointEvery = 0;    ///< write OUT.partial every N chunks (0 = every checkpointSeconds)
  double checkpointSeconds = 300;  ///< time between checkpoints when checkpointEvery == 0 (<= 0: never)
  bool resume = false;             ///< continue from OUT.partial
  bool force = false;              ///< replace an existing OUT
};

/// What the source is, for the manifest.
struct SourceInfo {
  std::string path;
  std::string kind;  ///< "txt", "dir", "jsonl" (corpora) or "tokens" (pre-tokenised file)
  std::vector<std::string> categories;
  /// Content fingerprint of the corpus (analysis/io/links.h
  /// contentFingerprint; "" = unknown): which documents a recording read is
  /// compared with an evaluation's by it (analysis/eval/eval_data.h).
  std::string fingerprint;
};

/// Yields token sequences in a deterministic order; `fn` returns false to stop.
using SequenceSource = std::function<void(const std::function<bool(const Sequence&)>& fn)>;

/// One input of an encoder-decoder model: the encoder's ids (source.ids,
/// with the pair's id as docId) and the decoder's teacher-forced input ids
/// (decoder_start followed by the labels shifted right; parallel_corpus.h
/// tokenizePair). `decoder` is empty for monolingual (encoder-only) input.
struct SequencePair {
  Sequence source;
  std::vector<int32_t> decoder;
};
/// Yields pairs in a deterministic order; `fn` returns false to stop.
using PairSource = std::function<void(const std::function<bool(const SequencePair&)>& fn)>;

struct RecordSummary {
  int64_t tokens = 0;
  int64_t sequences = 0;
  int64_t chunks = 0;
  double seconds = 0;
  std::filesystem::path out;
};

/// Throws ParameterError naming `where` (the model folder) and the site when
/// `config` has an FFN site `record` cannot record: one wider than 46340
/// neurons (its dense I32 co-activation matrix would exceed 2^31 entries).
/// Every architecture's sites are recordable otherwise: dense single-stack
/// models (blk.L), encoder-decoder models (enc.blk.L, dec.blk.L) and native
/// MoE models (mixtral, qwen2_moe, olmoe: the experts blk.L.exp.E and shared
/// experts blk.L.shared of their MoE layers, with the layers' routing
/// statistics, and blk.L for their dense layers). Called by
/// recordActivations and, before any corpus work, by `moefy record`.
/// Thread-safe.
void requireRecordable(const ModelConfig& config, const std::string& where);

/// The site indices (ModelConfig::siteIndex, analysis/model/site.h "Site
/// indices" and "Expert site indices") that `layers` (--layers, single-stack
/// models only) or `sites` (--sites: site names, or the groups enc, dec, blk)
/// select; every recordable FFN site (ModelConfig::indexedSites) when both
/// are empty. For a native MoE layer L, layer L (--layers L, --sites blk.L)
/// selects its expert sites and its shared site; --sites blk.L.exp.E or
/// blk.L.shared one of them. Sorted, without duplicates. Throws
/// ParameterError naming the option and the missing site (and the sites the
/// model has). Thread-safe.
std::vector<int> resolveRecordSites(const ModelConfig& config, const std::vector<int>& layers,
                                    const std::vector<std::string>& sites);

/// Records `source` through `model` into the folder `out` (written atomically;
/// nothing is left on error or cancel except the last checkpoint OUT.partial,
/// which only exists if a checkpoint was due). For an encoder-decoder model
/// the sequences are encoder inputs (monolingual corpus): asking for a decoder
/// site is a ParameterError. Throws ParameterError/FormatError/
/// IoError/CancelledError.
RecordSummary recordActivations(const Model& model, const SequenceSource& source, const SourceInfo& info,
                                const RecordOptions& options, const std::filesystem::path& out, JobContext& job);

/// Records pairs through an encoder-decoder model (also accepts single-stack
/// models, which see source only): enc.blk.L sites over the source tokens,
/// dec.blk.L sites over the teacher-forced decoder inputs (the forward pass
/// is Model::encode, then Model::decodeHidden when a decoder site is
/// recorded). Each stack is its own token stream with its own token count
/// and reservoir; padding positions are never counted. Pairs are recorded
/// whole (options.maxTokens stops after the pair that reaches it, counting the
/// recorded streams' tokens). Errors as recordActivations, plus
/// ParameterError for a pair without decoder input when a decoder site is
/// recorded, or a side longer than options.seqLen.
RecordSummary recordSeq2SeqActivations(const Model& model, const PairSource& source, const SourceInfo& info,
                                       const RecordOptions& options, const std::filesystem::path& out, JobContext& job);

/// Adds recordings of the same model, layers and options (exact for every
/// statistic; the reservoir samples are merged by weighted sampling, exact
/// concatenation when the shards hold fewer tokens than the sample size).
void mergeRecordings(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& out, bool force,
                     JobContext& job);

/// The active neurons of `rule` over hiddens h [N, n] (F32, row-major) as bit
/// sets, token-major: bit b of bits[t * G + g] (G = ceil(n / 64)) is neuron
/// g * 64 + b of token t; bits past n are 0. bits holds N * G words. The rule
/// the recorder counts with: positive (h > 0), threshold:TAU (|h| > TAU), or
/// top:P (the round(P n), at least 1, largest |h| per token, ties to the
/// lower neuron index); a NaN is never active under the first two. What
/// packTokenBits turns into the co-activation kernel's neuron-major rows.
/// Parallel over tokens (OpenMP); thread-safe for distinct outputs. `kernel`
/// picks the compares of the positive and threshold rules (Best: AVX-512F,
/// else AVX2, else portable; all give the same bits); ParameterError when it
/// cannot run on this CPU.
void activeBits(const float* h, int64_t N, int64_t n, const ActiveRule& rule, uint64_t* bits,
                CoactKernel kernel = CoactKernel::Best);

/// The checkpoint folder used for --resume: OUT with ".partial" appended.
std::filesystem::path checkpointPath(const std::filesystem::path& out);

/// A SequenceSource over an in-memory list (tests, GUI selections).
SequenceSource vectorSource(std::vector<Sequence> sequences);

/// A pre-tokenised file: safetensors with `token_ids` I32/I64 [N, T], optional
/// `lengths` I32/I64 [N] (default T), `doc_id` I64 [N] (default row index),
/// `category` I32 [N] (default -1), and metadata "categories" (a JSON list).
/// Throws FormatError naming the file and tensor.
SequenceSource tokenFileSource(const std::filesystem::path& path, SourceInfo& info, int64_t maxTokens = 0);

}  // namespace moefy
