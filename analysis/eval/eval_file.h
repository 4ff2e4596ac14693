#pragma once
// The reader of eval.json (docs/formats.md), used by every consumer of an
// evaluation (the studio's plots, `moefy demo`'s report). It refuses values
// that no evaluation can produce, so a damaged file is an error instead of a
// plot of a perplexity of -5 or a speed-up of -1e300.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace moefy {

/// Parses `file` (readJsonFile: regular file, depth limit, no duplicate keys)
/// and validates it with validateEvalDocument. Returns the document.
/// Throws IoError / FormatError naming the file and key. Thread-safe.
nlohmann::json readEvalFile(const std::filesystem::path& file);

/// The invariants of an eval.json document, checked where present:
/// "format" is "moefy-eval"; every loss is finite and >= 0; every perplexity
/// is finite and >= 1 (it is exp(loss)); every result has a fraction in
/// [0, 1]; top1_agreement lies in [0, 1]; kl and loss_delta are finite;
/// layer_rel_error entries are null or finite and >= 0; ffn_flops_fraction
/// and the layer_ffn_flops_fraction entries (null allowed) are finite and
/// > 0 (above 1 for methods that need the dense hidden); every speed figure
/// (tokens per second, speed-up) is finite and > 0; the data block, where
/// present: corpus is an object, corpus.split is "heldout", "train" or
/// "all", corpus.fingerprint is 16 lower-case hex digits, corpus.sequences
/// >= 1, corpus.tokens, seq_len and split_seed >= 0, held_out_fraction in
/// [0, 1], seed >= 0 (integers range-checked); a "generation" block of
/// the reference or a result (eval --generate): an object with integer
/// sentences >= 1, bleu and chrf in [0, 100], identical_to_reference in
/// [0, 1], seconds_per_sentence >= 0, speedup > 0 where present,
/// generated_tokens >= 0, truncated in [0, sentences], and buckets (when
/// present) a non-empty list of such figures with integer
/// min_source_tokens >= 1 <= max_source_tokens, disjoint and ascending,
/// whose sentences add up to the block's. Throws FormatError
/// "FILE: results[3].perplexity = -5 is below 1" (one line). `file` names the
/// document in messages.
void validateEvalDocument(const nlohmann::json& doc, const std::string& file);

}  // namespace moefy
