#include "analysis/eval/translate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>

#include "analysis/common/error.h"
#include "analysis/eval/bleu.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/generate.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

std::vector<LengthBucket> sourceLengthBuckets(const std::vector<Seq2SeqExample>& pairs, int count) {
  if (pairs.empty()) throw ParameterError("length buckets: no pairs");
  if (count < 1) throw ParameterError("length buckets: need at least one bucket (got " + std::to_string(count) + ")");
  std::vector<int64_t> sorted;
  for (const auto& p : pairs) sorted.push_back(static_cast<int64_t>(p.source.size()));
  std::sort(sorted.begin(), sorted.end());
  const int64_t n = static_cast<int64_t>(sorted.size());
  std::vector<int64_t> upper;  // e_1 .. e_count, non-decreasing
  for (int k = 1; k <= count; ++k) {
    const int64_t idx = (static_cast<int64_t>(k) * n + count - 1) / count - 1;  // ceil(k n / count) - 1
    upper.push_back(sorted[static_cast<size_t>(std::clamp<int64_t>(idx, 0, n - 1))]);
  }
  std::vector<LengthBucket> out;
  int64_t lower = sorted.front() - 1;
  for (int64_t e : upper) {
    if (e <= lower) continue;  // repeated lengths: an empty bucket
    LengthBucket b;
    b.minTokens = INT64_MAX;
    b.maxTokens = 0;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const auto len = static_cast<int64_t>(pairs[i].source.size());
      if (len > lower && len <= e) {
        b.sentences.push_back(i);
        b.minTokens = std::min(b.minTokens, len);
        b.maxTokens = std::max(b.maxTokens, len);
      }
    }
    lower = e;
    if (!b.sentences.empty()) out.push_back(std::move(b));
  }
  return out;
}

std::vector<std::vector<size_t>> translationBatches(const std::vector<LengthBucket>& buckets, int batch) {
  if (batch < 1) throw ParameterError("--batch must be >= 1 (got " + std::to_string(batch) + ")");
  std::vector<std::vector<size_t>> out;
  for (const LengthBucket& b : buckets)
    for (size_t i = 0; i < b.sentences.size(); i += static_cast<size_t>(batch))
      out.emplace_back(b.sentences.begin() + static_cast<long>(i),
                       b.sentences.begin() + static_cast<long>(std::min(b.sentences.size(), i + batch)));
  return out;
}

Translation translatePairs(Model& model, std::shared_ptr<const FfnOverride> ffn,
                           const std::vector<Seq2SeqExample>& pairs, const Tokenizer& tokenizer,
                           const std::vector<std::vector<size_t>>& batches, int maxNewTokens, JobContext& job,
                           double progressBase, double progressSpan) {
  if (maxNewTokens < 1) throw ParameterError("--generate must be >= 1 (got " + std::to_string(maxNewTokens) + ")");
  std::vector<bool> covered(pairs.size(), false);
  for (const auto& b : batches)
    for (size_t i : b) {
      if (i >= pairs.size())
        throw ParameterError("translation batch names pair " + std::to_string(i) + " of " +
                             std::to_string(pairs.size()));
      covered[i] = true;
    }
  for (size_t i = 0; i < pairs.size(); ++i)
    if (!covered[i]) throw ParameterError("pair " + std::to_string(i) + " is in no translation batch");

  struct Restore {
    Model& m;
    std::shared_ptr<const FfnOverride> saved;
    ~Restore() { m.setFfnOverride(saved); }
  } restore{model, model.ffnOverride()};
  model.setFfnOverride(std::move(ffn));

  Seq2SeqGenerateOptions o;
  o.maxNewTokens = maxNewTokens;
  auto sourcesOf = [&](const std::vector<size_t>& batch) {
    std::vector<std::vector<int64_t>> src;
    for (size_t i : batch) src.push_back(pairs[i].source);
    return src;
  };
  Translation t;
  t.ids.resize(pairs.size());
  t.texts.resize(pairs.size());
  t.stopped.assign(pairs.size(), false);
  t.seconds.assign(pairs.size(), 0.0);
  if (batches.empty()) return t;
  // The first decoding of a process (or after another model size) pays for
  // allocations; one untimed batch keeps that out of the first bucket's time.
  greedyGenerateSeq2Seq(model, sourcesOf(batches.front()), o, nullptr, &job);
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const std::vector<size_t>& batch = batches[bi];
    if (batch.empty()) continue;
    const auto src = sourcesOf(batch);
    const auto t0 = std::chrono::steady_clock::now();
    Seq2SeqGeneration g = greedyGenerateSeq2Seq(model, src, o, nullptr, &job);  // cancel per generated token
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t k = 0; k < batch.size(); ++k) {
      const size_t i = batch[k];
      t.ids[i] = std::move(g.tokens[k]);
      t.stopped[i] = g.stopped[k];
      t.seconds[i] = secs / static_cast<double>(batch.size());
      t.texts[i] = tokenizer.decode(std::vector<int32_t>(t.ids[i].begin(), t.ids[i].end()), true);
    }
    job.setProgress(progressBase + progressSpan * static_cast<double>(bi + 1) / static_cast<double>(batches.size()));
  }
  return t;
}

namespace {

// Corpus BLEU/chrF, identical share and time of the sentences `which`.
nlohmann::json figuresOf(const Translation& t, const Translation* reference, const std::vector<Seq2SeqExample>& pairs,
                         const std::vector<size_t>& which) {
  std::vector<std::string> hyps, refs;
  double seconds = 0, refSeconds = 0;
  int64_t identical = 0;
  for (size_t i : which) {
    hyps.push_back(t.texts[i]);
    refs.push_back(pairs[i].target);
    seconds += t.seconds[i];
    refSeconds += reference ? reference->seconds[i] : t.seconds[i];
    if (!reference || reference->ids[i] == t.ids[i]) ++identical;
  }
  const double n = static_cast<double>(which.size());
  const BleuScore bleu = corpusBleu(hyps, refs);
  nlohmann::json j;
  j["sentences"] = which.size();
  j["bleu"] = bleu.score;
  j["chrf"] = corpusChrf(hyps, refs);
  j["identical_to_reference"] = n > 0 ? static_cast<double>(identical) / n : 1.0;
  j["seconds_per_sentence"] = n > 0 ? seconds / n : 0.0;
  // A batch can finish faster than the clock resolves: leave the ratio out then.
  if (seconds > 0 && refSeconds > 0) j["speedup"] = refSeconds / seconds;
  j["bleu_detail"] = {{"precisions", bleu.precisions},
                      {"bp", bleu.bp},
                      {"ratio", bleu.ratio},
                      {"hyp_len", bleu.stats.hypLen},
                      {"ref_len", bleu.stats.refLen}};
  return j;
}

}  // namespace

nlohmann::json translationFigures(const Translation& t, const Translation* reference,
                                  const std::vector<Seq2SeqExample>& pairs, const std::vector<LengthBucket>& buckets) {
  const size_t n = pairs.size();
  if (t.ids.size() != n || t.texts.size() != n || t.seconds.size() != n || t.stopped.size() != n ||
      (reference && (reference->ids.size() != n || reference->seconds.size() != n)))
    throw ParameterError("translation figures: " + std::to_string(n) + " pairs, but translations of other sizes");
  for (size_t i = 0; i < n; ++i)
    if (pairs[i].target.empty())
      throw ParameterError("pair " + std::to_string(i) + " has no target text: BLEU needs the corpus's targets");
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  nlohmann::json j = figuresOf(t, reference, pairs, all);
  int64_t generated = 0, truncated = 0;
  for (size_t i = 0; i < n; ++i) {
    generated += static_cast<int64_t>(t.ids[i].size());
    truncated += t.stopped[i] ? 0 : 1;
  }
  j["generated_tokens"] = generated;
  j["truncated"] = truncated;
  nlohmann::json rows = nlohmann::json::array();
  for (const LengthBucket& b : buckets) {
    nlohmann::json r = figuresOf(t, reference, pairs, b.sentences);
    r.erase("bleu_detail");
    r["min_source_tokens"] = b.minTokens;
    r["max_source_tokens"] = b.maxTokens;
    rows.push_back(std::move(r));
  }
  j["buckets"] = std::move(rows);
  return j;
}

}  // namespace moefy
