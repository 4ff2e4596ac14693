#pragma once
// Greedy translation of a parallel corpus by an encoder-decoder model (T5),
// dense or MoE, as `moefy eval --generate N` runs it: the sources are decoded
// greedily in right-padded batches (greedyGenerateSeq2Seq, KV-cached),
// detokenised, scored with corpus BLEU and chrF against the corpus's target
// texts (analysis/eval/bleu.h, sacreBLEU's defaults), compared with the dense
// model's output sentence by sentence, and timed per sentence in buckets of
// source length (the translation study's table: decoding time and BLEU per
// sentence-length bucket, dense vs MoE).
//
// Buckets are the quartiles of the source lengths in tokens (sourceLengthBuckets),
// and every decoding batch holds sentences of one bucket only, so a batch's
// wall time divided by its size is the time per sentence of that bucket.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moefy {

class FfnOverride;
class JobContext;
class Model;
class Tokenizer;
struct Seq2SeqExample;

/// Sentences whose source length (Seq2SeqExample::source.size(): tokens
/// after the --seq-len cut, eos included) lies in [minTokens, maxTokens].
struct LengthBucket {
  int64_t minTokens = 0, maxTokens = 0;
  std::vector<size_t> sentences;  ///< indices into the pairs, ascending
};

/// Up to `count` buckets of source length at the quantiles of the lengths:
/// with the lengths sorted ascending as s[0..n-1], bucket k (1-based) holds
/// the lengths in (e_{k-1}, e_k] with e_0 = s[0] - 1, e_k = s[ceil(k n /
/// count) - 1]; buckets left empty by repeated lengths are dropped, so the
/// buckets are disjoint, ascending, non-empty and hold every sentence once.
/// minTokens/maxTokens are the shortest and longest source in the bucket.
/// Throws ParameterError for no pairs or count < 1. Pure, thread-safe.
std::vector<LengthBucket> sourceLengthBuckets(const std::vector<Seq2SeqExample>& pairs, int count = 4);

/// The decoding batches: bucket by bucket, each bucket's sentences in corpus
/// order in chunks of `batch` (the last chunk of a bucket may be smaller).
/// Throws ParameterError for batch < 1. Pure, thread-safe.
std::vector<std::vector<size_t>> translationBatches(const std::vector<LengthBucket>& buckets, int batch);

/// The output of translatePairs, one entry per pair in input order.
struct Translation {
  std::vector<std::vector<int64_t>> ids;  ///< greedyGenerateSeq2Seq's tokens (stop id kept when it stopped)
  std::vector<std::string> texts;         ///< tokenizer.decode(ids, skip special tokens)
  std::vector<bool> stopped;              ///< whether the sentence ended with a stop id before maxNewTokens
  std::vector<double> seconds;            ///< wall seconds of its batch / the batch's size
};

/// Greedy translation of every pair's source with `ffn` as the model's FFN
/// override (null = dense; the model's own override is restored afterwards):
/// greedyGenerateSeq2Seq(model, sources of the batch, maxNewTokens) per entry
/// of `batches` (translationBatches), the first batch decoded once untimed
/// before the timed ones (allocator warm-up). The time of a batch covers the
/// encoder, the cross-attention keys/values and every decoding step. Cancel is
/// polled after every generated token (CancelledError); progress is reported
/// per batch as (progressBase + share of batches done * progressSpan).
/// Throws ParameterError for maxNewTokens < 1, a batch index outside `pairs`,
/// a pair in no batch, and greedyGenerateSeq2Seq's errors.
Translation translatePairs(Model& model, std::shared_ptr<const FfnOverride> ffn,
                           const std::vector<Seq2SeqExample>& pairs, const Tokenizer& tokenizer,
                           const std::vector<std::vector<size_t>>& batches, int maxNewTokens, JobContext& job,
                           double progressBase = 0, double progressSpan = 1);

/// The "generation" block of eval.json (docs/formats.md "Evaluation") of one
/// translation against the corpus targets (Seq2SeqExample::target) and the
/// reference's translation (null: the translation is the reference itself):
///   sentences, generated_tokens, truncated (sentences without a stop id),
///   bleu (corpusBleu, Exp smoothing: sacreBLEU's default), bleu_detail
///   {precisions, bp, ratio, hyp_len, ref_len}, chrf (corpusChrf),
///   identical_to_reference (share of sentences whose ids equal the
///   reference's), seconds_per_sentence (mean over sentences), and buckets:
///   [{min_source_tokens, max_source_tokens, sentences, seconds_per_sentence,
///   bleu, chrf, identical_to_reference, speedup (the reference's
///   seconds_per_sentence / this one's; 1 for the reference)}].
/// Throws ParameterError when the sizes of `t`, `pairs` and `reference`
/// differ or a pair has no target text.
nlohmann::json translationFigures(const Translation& t, const Translation* reference,
                                  const std::vector<Seq2SeqExample>& pairs, const std::vector<LengthBucket>& buckets);

}  // namespace moefy
