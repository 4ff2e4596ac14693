#pragma once
// The option table of `moefy eval` and the studio's Evaluate step.
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/common/options.h"
#include "analysis/eval/eval_run.h"
#include "analysis/text/corpus.h"

namespace moefy {

/// Which sequences an evaluation reads from its corpus (readSequences()).
struct EvalCorpusOptions {
  int seqLen = 128;       ///< window length in tokens (encoder-decoder pairs: each side cut to it)
  int64_t tokens = 4096;  ///< token budget (0 = the whole split); pairs: target tokens, whole pairs
  Split split = Split::HeldOut;
  // Parallel corpora of encoder-decoder models (analysis/text/parallel_corpus.h):
  std::string targetFile;              ///< --target: line-aligned target file of CORPUS
  std::string sourceField = "source";  ///< --source-field (.jsonl)
  std::string targetField = "target";  ///< --target-field (.jsonl)
};

/// The options of `moefy eval` (defaults from EvalCorpusOptions{},
/// EvalOptions{} and EvalRunSpec{}): moe, partition, router (repeatable),
/// sweep, top-k, bound, tokens, seq-len, split, target, source-field,
/// target-field, batch, seed, speed, generate, speed-seconds, out, force, json, quiet.
const OptionTable& evalOptionTable();

/// "0.1,0.25,1" -> fractions, each finite and in (0, 1]; blank text -> empty.
/// Throws ParameterError naming --sweep and the item, or an empty entry (splitListValue).
std::vector<double> parseSweep(const std::string& text);

/// Fills spec.sweep, spec.activationBound, spec.options.batch/seed, spec.speed, spec.generate (0
/// when --generate is absent), spec.speedSeconds,
/// spec.seqLen and spec.split
/// from validated values of evalOptionTable(), and returns the corpus options.
/// Throws ParameterError (--sweep with --top-k, a bad --sweep).
EvalCorpusOptions applyEvalOptions(const OptionValues& values, EvalRunSpec& spec);

}  // namespace moefy
