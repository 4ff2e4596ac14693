#pragma once
// One evaluation run as `moefy eval` and the studio's Evaluate step perform
// it: candidates from MoE bases (each at its own top-k, or swept over
// active-expert fractions) and optionally the top-k activation bound at the
// same budgets, quality and FFN FLOPs against the reference, optional speed,
// assembled into the eval.json document (docs/formats.md "Evaluation").
#include <c10/core/Device.h>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "analysis/eval/eval.h"
#include "analysis/text/corpus.h"

namespace moefy {

class Tokenizer;

struct EvalRunSpec {
  /// (name, MoE) per router; the name is the result's "router".
  std::vector<std::pair<std::string, std::shared_ptr<const MoeFfn>>> bases;
  /// Null = the model's dense FFNs.
  std::shared_ptr<const FfnOverride> reference;
  /// Active-expert fractions in (0, 1]; empty = each base at its own top-k.
  std::vector<double> sweep;
  /// Also evaluate the top-k activation bound ("topk-act",
  /// analysis/moe/activation_bound.h) at every budget of the run: each sweep
  /// fraction, else each base's mean k/E. It prunes the layers the bases
  /// MoEfy (every FFN layer when there is no base; then a sweep is needed).
  bool activationBound = false;
  EvalOptions options;
  /// The device the model is loaded on (--device; the caller loads it). The
  /// quality figures are computed there; --speed and --bound need the CPU
  /// (applyEvalOptions refuses them elsewhere).
  c10::Device device = c10::Device(c10::kCPU);
  bool speed = false;         ///< also time forward passes and greedy generation
  double speedSeconds = 1.0;  ///< minimum seconds per forward timing and per generation timing
  /// Encoder-decoder models: greedy-translate the pairs with at most this many
  /// new tokens per sentence, with the reference and every candidate, scored
  /// with BLEU/chrF and timed per source-length bucket (analysis/eval/translate.h);
  /// 0 = no translation.
  int generate = 0;
  // Provenance, copied into the document.
  std::string modelPath, corpusPath;
  int seqLen = 0;
  /// The split the sequences came from (readSequences; a ".ids" corpus is
  /// read whole and recorded as "all"). Recorded with the split seed and
  /// held-out fraction readSequences uses (SequenceOptions defaults).
  Split split = Split::HeldOut;
  nlohmann::json source = nlohmann::json::object();
};

/// Checks a --sweep list: every fraction in (0, 1]. Throws ParameterError.
void checkSweep(const std::vector<double>& sweep);

/// Refuses what eval does not cover yet for a model: an encoder-decoder model
/// (t5; scored teacher-forced by runSeq2SeqEvaluation) or a native MoE model
/// with spec.activationBound, or a single-stack model with spec.generate (greedy
/// translation needs an encoder-decoder model and a parallel corpus), gets a
/// ParameterError naming `where`, the model_type and the option.
/// runEvaluation and runSeq2SeqEvaluation call it first; the CLI calls it
/// before reading the corpus.
void requireEvaluable(const ModelConfig& config, const std::string& where, const EvalRunSpec& spec);

/// The candidates of `spec`: bases x sweep (or each base's mean k/E), then
/// with activationBound the bound ("topk-act") at each distinct budget of
/// those, in ascending order. The bound takes its FFN weights from `model`,
/// or, for layers it lacks (a MoE export loaded as the model), from the
/// bases' experts. Throws ParameterError for neither bases nor a bound, or a
/// bound without bases and without a sweep.
std::vector<EvalCandidate> evalCandidates(const EvalRunSpec& spec, const Model& model);

/// Evaluates every candidate of `spec` on `sequences` and returns the eval.json
/// document: format, version, tool_version, seed, model, corpus (path,
/// fingerprint: contentFingerprint of the corpus when it exists, split,
/// split_seed, held_out_fraction, sequences, tokens, seq_len), source, reference,
/// results (one per candidate: QualityFigures::toJson() plus router,
/// loss_delta and, with speed, forward/generation tokens/s and speed-ups
/// against the reference, or a speed_note for candidates that need the dense
/// hidden). The model's own override is cleared first. Throws ParameterError
/// for an encoder-decoder model (runSeq2SeqEvaluation scores those) and as
/// requireEvaluable (spec.generate).
/// Cancellable between candidates.
nlohmann::json runEvaluation(Model& model, const EvalRunSpec& spec, const std::vector<std::vector<int64_t>>& sequences,
                             JobContext& job);

/// The candidates of an encoder-decoder evaluation: each base (or each base
/// at each sweep fraction) per site group: "enc" (the encoder's MoE sites
/// only, the decoder dense), "dec" and "both", the groups a base covers
/// (a base over the decoder only gives "dec"). `groups` receives each
/// candidate's group. Throws ParameterError for the activation bound (not
/// covered for encoder-decoder models yet) or no bases.
std::vector<EvalCandidate> seq2seqCandidates(const EvalRunSpec& spec, const Model& model,
                                             std::vector<std::string>& groups);

/// runEvaluation for encoder-decoder models on teacher-forced pairs
/// (evaluateSeq2SeqQuality): model.objective "seq2seq", corpus.pairs and
/// corpus.tokens (target tokens scored) besides the corpus provenance of
/// runEvaluation (split: spec.split), one result per seq2seqCandidates entry
/// with its `site_group`.
/// With spec.speed: teacher-forced forward tokens/s (forwardSeq2SeqSpeed over
/// the pairs in batches of spec.options.batch) and greedy decoding tokens/s
/// (generationSpeed from the first pair's source, 32 new tokens), dense and
/// per candidate, the same fields as runEvaluation.
/// With spec.generate > 0 (`tokenizer` required): the reference's and every
/// candidate's greedy translations of the pairs (translatePairs with the
/// buckets of sourceLengthBuckets(pairs, 4) and translationBatches(buckets,
/// spec.options.batch)) give reference.generation and each result's
/// generation (translationFigures; oracle routers add a generation_note:
/// their time includes the dense hidden). Cancellable per generated token.
/// Throws ParameterError as requireEvaluable (spec.activationBound), for a
/// single-stack model, as seq2seqCandidates, and with spec.generate for a
/// missing tokenizer or a pair without target text.
nlohmann::json runSeq2SeqEvaluation(Model& model, const EvalRunSpec& spec, const std::vector<Seq2SeqExample>& pairs,
                                    JobContext& job, const Tokenizer* tokenizer = nullptr);

/// The eval.json document as written into `out`: format version 2, the model,
/// corpus and source paths as links relative to `out` (analysis/io/links.h).
nlohmann::json evalDocumentFor(const std::filesystem::path& out, const nlohmann::json& doc);

/// Writes OUT/eval.json (evalDocumentFor) atomically. An existing OUT is
/// replaced only with `force`, only if it is an evaluation, and never if it is
/// one of `inputs` (checkOutput in analysis/io/fsutil.h). Throws IoError naming OUT.
void writeEvalFolder(const std::filesystem::path& out, bool force, const nlohmann::json& doc,
                     const std::vector<std::filesystem::path>& inputs = {});

}  // namespace moefy
