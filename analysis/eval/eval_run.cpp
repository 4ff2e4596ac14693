#include "analysis/eval/eval_run.h"

#include <algorithm>
#include <functional>
#include <optional>

#include "analysis/common/distributed.h"
#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"
#include "analysis/eval/translate.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/moe/activation_bound.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/text/parallel_corpus.h"

namespace moefy {

void checkSweep(const std::vector<double>& sweep) {
  for (double f : sweep)
    if (!(f > 0 && f <= 1)) throw ParameterError("--sweep: fraction " + std::to_string(f) + " outside (0, 1]");
}

static void requireEvaluableModel(const ModelConfig& c, const std::string& where, const EvalRunSpec& spec) {
  if (!c.encoderDecoder) {
    if (spec.activationBound && c.expertCount > 0)
      throw ParameterError(where + ": " + c.modelType +
                           " is a native MoE model; eval --bound (the top-k activation bound) covers dense FFN "
                           "layers so far, not the experts of native MoE layers");
    if (spec.generate > 0)
      throw ParameterError(where + ": " + c.modelType +
                           " is a single-stack model; eval --generate translates a parallel corpus with an "
                           "encoder-decoder model (t5)");
    return;
  }
  // Encoder-decoder models are scored teacher-forced (runSeq2SeqEvaluation);
  // the activation bound is single-stack only so far.
  if (spec.activationBound)
    throw ParameterError(where + ": " + c.modelType +
                         " is an encoder-decoder model; eval --bound (the top-k activation bound) covers single-stack "
                         "models so far");
}

void requireEvaluable(const ModelConfig& c, const std::string& where, const EvalRunSpec& spec) {
  requireEvaluableModel(c, where, spec);
  // Under mpirun only the quality figures are sharded (evaluateQuality):
  // timings of ranks sharing a machine would measure each other.
  if (dist::size() > 1 && spec.speed)
    throw ParameterError(
        "--speed: speed is timed in one process; run eval --speed without mpirun (the quality "
        "figures shard across ranks)");
  if (dist::size() > 1 && spec.generate > 0)
    throw ParameterError(
        "--generate: translation (BLEU) runs in one process so far; run eval --generate without "
        "mpirun");
}

std::vector<EvalCandidate> evalCandidates(const EvalRunSpec& spec, const Model& model) {
  if (spec.bases.empty() && !spec.activationBound)
    throw ParameterError("eval: no MoE to evaluate (give a router or a MoE export)");
  std::vector<EvalCandidate> cands;
  std::vector<double> budgets = spec.sweep;
  for (const auto& [name, b] : spec.bases) {
    if (spec.sweep.empty()) {
      // frac: the mean k / E; neuronFrac: the mean share of d_ff the MoE
      // computes per token, (shared + k routed neurons) / d_ff, which is k / E
      // without a shared expert and is the bound's budget.
      double frac = 0, neuronFrac = 0;
      bool shared = false;
      int n = 0;
      for (const auto& l : b->layers()) {
        if (!l.weights) continue;
        const ExpertLayout& lay = l.weights->layout;
        frac += double(l.topK) / lay.experts, ++n;
        const double routed = double(lay.dFF() - lay.sharedSize()) / lay.experts;
        neuronFrac += (double(lay.sharedSize()) + l.topK * routed) / double(lay.dFF());
        shared = shared || lay.shared;
      }
      cands.push_back({name, n ? frac / n : 1.0, b, nullptr});
      budgets.push_back(shared && n ? std::min(1.0, neuronFrac / n) : cands.back().fraction);
    } else {
      for (double f : spec.sweep) cands.push_back({name, f, b->withFraction(f), nullptr});
    }
  }
  if (!spec.activationBound) return cands;
  if (budgets.empty()) throw ParameterError("--bound without a router needs the budgets: give --sweep F,F,..");
  std::sort(budgets.begin(), budgets.end());
  budgets.erase(std::unique(budgets.begin(), budgets.end()), budgets.end());
  // The bound prunes the layers the bases MoEfy (all FFN layers without bases).
  const int nL = model.config().nLayer;
  std::vector<bool> sparse(nL, spec.bases.empty());
  std::vector<FfnWeights> ffn(nL);
  for (int L = 0; L < nL; ++L) {
    const MoeFfn* owner = nullptr;
    for (const auto& [name, b] : spec.bases)
      if (b->isMoe(L)) owner = b.get(), sparse[L] = true;
    // A MoE export loaded as the model has no dense FFN tensors for its MoE
    // layers: its experts, unpacked, are that FFN.
    if (owner && !model.tensors().count(model.tensorName(Role::FfnUp, L)))
      ffn[L] = owner->layers()[L].weights->unpack();
    else
      ffn[L] = model.ffnWeights(L);
  }
  const ActivationBoundFfn all(std::move(ffn), {});
  for (double f : budgets) cands.push_back({"topk-act", f, nullptr, all.withBudget(f, sparse)});
  return cands;
}

namespace {

/// Speed fields of one result against the reference: the medians' ratio, and
/// the widest ratio range the runs allow (MoE min / dense max .. MoE max /
/// dense min), with the run counts.
void addSpeed(nlohmann::json& speed, const std::string& what, const SpeedStats& moe, const SpeedStats& dense) {
  speed[what + "_tokens_per_s"] = moe.median;
  speed["dense_" + what + "_tokens_per_s"] = dense.median;
  speed[what + "_speedup"] = moe.median / dense.median;
  speed[what + "_speedup_min"] = moe.min / dense.max;
  speed[what + "_speedup_max"] = moe.max / dense.min;
  speed[what + "_tokens_per_s_min"] = moe.min;
  speed[what + "_tokens_per_s_max"] = moe.max;
  speed[what + "_runs"] = moe.runs;
  speed["dense_" + what + "_runs"] = dense.runs;
}

/// Interleaved timings (eval.h forwardSpeeds) of FFN overrides on one run's
/// work: the forward or the generation speed, one SpeedStats per override.
using SpeedTiming = std::function<std::vector<SpeedStats>(const FfnOverrides&)>;

/// The speed block of every result (results[i] belongs to cands[i]). Each
/// candidate that does not need the dense hidden gets `speed` (forward, and
/// generation when `generate` is set), timed interleaved with its dense
/// baseline, run by run, so that a drift of the machine's speed falls on both
/// (timing the baseline once, first, made a tiny GPT-2's MoE with every expert
/// active look 1.2-1.4x "faster" than dense in CI when the machine sped up);
/// the others get a `speed_note`. Progress counts the timings done. The
/// baseline is the faster (by median, timed interleaved) of the model's own
/// dense FFN and DenseKernelFfn (the same direct GEMV/GEMM and activation
/// code as the MoE candidates): on small models the kernel beat the model's
/// ATen path (a tiny GPT-2's MoE with every expert active timed 1.4-2.5x
/// "faster" than dense), which overstated every speed-up.
void addSpeedResults(nlohmann::json& results, const std::vector<EvalCandidate>& cands,
                     std::shared_ptr<const FfnOverride> reference, const SpeedTiming& forward,
                     const SpeedTiming& generate, JobContext& job, const Model& model) {
  int timings = 1, timed = 0;
  for (const auto& c : cands) timings += c.needsDenseHidden() ? 0 : 1;
  auto timingDone = [&] { job.setProgress(static_cast<double>(++timed) / std::max(1, timings)); };
  job.setStage("eval: speed");
  job.setProgress(0.0);
  // The model's own dense FFN (no reference override) is also timed through
  // the kernel as one expert. Encoder-decoder models time through
  // forwardSeq2SeqSpeeds, whose sites this single-stack override does not
  // cover; a native MoE model has no dense FFN to pack (ffnWeights throws
  // ParameterError).
  std::shared_ptr<const DenseKernelFfn> kernelDense;
  if (!reference && !model.config().encoderDecoder) {
    try {
      kernelDense = std::make_shared<const DenseKernelFfn>(model);
    } catch (const ParameterError&) {
      kernelDense.reset();
    }
  }
  std::shared_ptr<const FfnOverride> forwardBase = reference, generateBase = reference;
  if (kernelDense) {
    const auto fwd = forward({reference, kernelDense});
    if (fwd[1].median > fwd[0].median) forwardBase = kernelDense;
    if (generate) {
      const auto gen = generate({reference, kernelDense});
      if (gen[1].median > gen[0].median) generateBase = kernelDense;
    }
  }
  timingDone();
  for (size_t i = 0; i < cands.size(); ++i) {
    job.checkCancel();
    nlohmann::json& r = results[i];
    if (cands[i].bound) {
      r["speed_note"] = "top-k activation bound: it needs the dense FFN's hidden, so it has no speed";
    } else if (cands[i].needsDenseHidden()) {
      r["speed_note"] = "oracle router: it needs the dense FFN's hidden, so it has no speed";
    } else {
      nlohmann::json speed = nlohmann::json::object();
      const auto fwd = forward({forwardBase, cands[i].moe});
      addSpeed(speed, "forward", fwd[1], fwd[0]);
      if (generate) {
        const auto gen = generate({generateBase, cands[i].moe});
        addSpeed(speed, "generate", gen[1], gen[0]);
      }
      r["speed"] = speed;
      timingDone();
    }
  }
}

}  // namespace

namespace {

// The eval.json document around the results (docs/formats.md "Evaluation").
// `corpus` holds the reader's counts; the split the corpus was read with
// (`split`, by isHeldOut with `splitSeed` and `heldOutFraction`) and the
// corpus's fingerprint are added here.
nlohmann::json evalDocument(const Model& m, const EvalRunSpec& spec, const QualityFigures& reference,
                            nlohmann::json results, nlohmann::json corpus, const std::string& objective, Split split,
                            uint64_t splitSeed, double heldOutFraction, JobContext& job) {
  nlohmann::json j;
  j["format"] = "moefy-eval";
  j["version"] = 1;
  j["tool_version"] = MOEFY_VERSION;
  j["model"] = {{"path", spec.modelPath},
                {"fingerprint", m.fingerprint()},
                {"arch", archName(m.config().arch)},
                {"objective", objective}};
  // Which data the figures are on (analysis/eval/eval_data.h): without the
  // split and the corpus's content, two evaluations of one model cannot be
  // compared, nor checked against the recording their routers learnt from.
  corpus["split"] = splitName(split);
  corpus["split_seed"] = splitSeed;
  corpus["held_out_fraction"] = heldOutFraction;
  if (!spec.corpusPath.empty()) {
    try {
      corpus["fingerprint"] = contentFingerprint(spec.corpusPath);
    } catch (const Error& e) {
      job.log(std::string("eval: no corpus fingerprint: ") + e.what());
    }
  }
  j["corpus"] = std::move(corpus);
  j["seed"] = spec.options.seed;
  j["source"] = spec.source;
  j["reference"] = reference.toJson();
  j["results"] = std::move(results);
  const EvalOptions& eo0 = spec.options;
  j["provenance"] = provenanceBlock("eval",
                                    {{"batch", eo0.batch},
                                     {"seed", eo0.seed},
                                     {"mlm_fraction", eo0.mlmFraction},
                                     {"mask_token_id", eo0.maskTokenId},
                                     {"layer_errors", eo0.layerErrors},
                                     {"sweep", spec.sweep},
                                     {"bound", spec.activationBound ? "topk-act" : ""},
                                     {"speed", spec.speed},
                                     {"speed_seconds", spec.speedSeconds},
                                     {"generate", spec.generate},
                                     {"seq_len", spec.seqLen}},
                                    {{"model", m.fingerprint()}});
  return j;
}

}  // namespace

std::vector<EvalCandidate> seq2seqCandidates(const EvalRunSpec& spec, const Model& model,
                                             std::vector<std::string>& groups) {
  if (spec.activationBound)
    throw ParameterError("--bound: the top-k activation bound covers single-stack models so far, not " +
                         model.config().modelType);
  if (spec.bases.empty()) throw ParameterError("eval: no MoE to evaluate (give --partition and --router)");
  std::vector<EvalCandidate> cands;
  groups.clear();
  for (const auto& [name, b] : spec.bases) {
    bool enc = false, dec = false;
    for (size_t L = 0; L < b->layers().size(); ++L) {
      if (!b->layers()[L].weights) continue;
      (b->siteAt(static_cast<int>(L)).stack == SiteStack::Decoder ? dec : enc) = true;
    }
    std::vector<std::pair<std::string, std::optional<SiteStack>>> which;
    if (enc && dec)
      which = {{"enc", SiteStack::Encoder}, {"dec", SiteStack::Decoder}, {"both", std::nullopt}};
    else
      which = {{enc ? "enc" : "dec", std::nullopt}};
    for (const auto& [group, only] : which) {
      std::vector<bool> keep(b->layers().size(), true);
      if (only)
        for (size_t L = 0; L < keep.size(); ++L) keep[L] = b->siteAt(static_cast<int>(L)).stack == *only;
      std::shared_ptr<const MoeFfn> g = b->withMoeOnly(keep);
      if (spec.sweep.empty()) {
        double frac = 0;
        int n = 0;
        for (const auto& l : g->layers())
          if (l.weights) frac += double(l.topK) / l.weights->layout.experts, ++n;
        cands.push_back({name, n ? frac / n : 1.0, g, nullptr});
        groups.push_back(group);
      } else {
        for (double f : spec.sweep) {
          cands.push_back({name, f, g->withFraction(f), nullptr});
          groups.push_back(group);
        }
      }
    }
  }
  return cands;
}

nlohmann::json runSeq2SeqEvaluation(Model& m, const EvalRunSpec& spec, const std::vector<Seq2SeqExample>& pairs,
                                    JobContext& job, const Tokenizer* tokenizer) {
  requireEvaluable(m.config(), spec.modelPath.empty() ? std::string("model") : spec.modelPath, spec);
  if (!m.config().encoderDecoder)
    throw ParameterError(m.config().modelType + " is a single-stack model: evaluate it on sequences (runEvaluation)");
  if (pairs.empty()) throw ParameterError("eval: no pairs");
  if (spec.generate < 0) throw ParameterError("--generate must be >= 1 (got " + std::to_string(spec.generate) + ")");
  if (spec.generate > 0) {
    if (!tokenizer)
      throw ParameterError("eval --generate: the model has no tokenizer to turn the translations into text for BLEU");
    for (size_t i = 0; i < pairs.size(); ++i)
      if (pairs[i].target.empty())
        throw ParameterError("eval --generate: pair " + std::to_string(i) +
                             " has no target text (BLEU needs the corpus's targets)");
  }
  checkSweep(spec.sweep);
  m.setFfnOverride(nullptr);
  std::vector<std::string> groups;
  const std::vector<EvalCandidate> cands = seq2seqCandidates(spec, m, groups);
  auto figs = evaluateSeq2SeqQuality(m, spec.reference, cands, pairs, spec.options, job);
  nlohmann::json results = nlohmann::json::array();
  for (size_t i = 1; i < figs.size(); ++i) {
    nlohmann::json r = figs[i].toJson();
    r["router"] = cands[i - 1].name;
    r["site_group"] = groups[i - 1];
    r["loss_delta"] = figs[i].loss - figs[0].loss;
    results.push_back(r);
  }
  if (spec.speed) {
    // Teacher-forced forward passes over the pairs, and KV-cached greedy
    // decoding from the first source (eos does not end a timing run).
    const std::vector<int64_t> source = pairs.front().source;
    addSpeedResults(
        results, cands, spec.reference,
        [&](const FfnOverrides& ffns) {
          return forwardSeq2SeqSpeeds(m, ffns, pairs, spec.options.batch, spec.speedSeconds, 3, &job);
        },
        [&](const FfnOverrides& ffns) { return generationSpeeds(m, ffns, source, 32, spec.speedSeconds, 3, &job); },
        job, m);
  }
  nlohmann::json referenceFigures = figs[0].toJson();
  if (spec.generate > 0) {
    job.setStage("eval: generate");
    job.setProgress(0.0);
    const std::vector<LengthBucket> buckets = sourceLengthBuckets(pairs, 4);
    const auto batches = translationBatches(buckets, spec.options.batch);
    const double span = 1.0 / static_cast<double>(cands.size() + 1);
    const Translation ref = translatePairs(m, spec.reference, pairs, *tokenizer, batches, spec.generate, job, 0, span);
    referenceFigures["generation"] = translationFigures(ref, nullptr, pairs, buckets);
    for (size_t i = 0; i < cands.size(); ++i) {
      const Translation t = translatePairs(m, cands[i].ffn(), pairs, *tokenizer, batches, spec.generate, job,
                                           static_cast<double>(i + 1) * span, span);
      results[i]["generation"] = translationFigures(t, &ref, pairs, buckets);
      if (cands[i].needsDenseHidden())
        results[i]["generation_note"] = "oracle router: its decoding time includes the dense FFN's hidden";
    }
  }
  int64_t tokens = 0;
  for (const auto& p : pairs) tokens += static_cast<int64_t>(p.labels.size());
  nlohmann::json corpus = {{"path", spec.corpusPath},
                           {"sequences", pairs.size()},
                           {"pairs", pairs.size()},
                           {"tokens", tokens},
                           {"seq_len", spec.seqLen}};
  const Seq2SeqOptions splitDefaults;  // readSeq2SeqPairs splits with these
  nlohmann::json doc = evalDocument(m, spec, figs[0], std::move(results), std::move(corpus), "seq2seq", spec.split,
                                    splitDefaults.seed, splitDefaults.heldOutFraction, job);
  doc["reference"] = std::move(referenceFigures);
  return doc;
}

nlohmann::json runEvaluation(Model& m, const EvalRunSpec& spec, const std::vector<std::vector<int64_t>>& seqs,
                             JobContext& job) {
  const std::string where = spec.modelPath.empty() ? std::string("model") : spec.modelPath;
  if (m.config().encoderDecoder)
    throw ParameterError(where + ": " + m.config().modelType +
                         " is an encoder-decoder model; evaluate it on a parallel corpus (runSeq2SeqEvaluation)");
  requireEvaluable(m.config(), where, spec);
  if (seqs.empty()) throw ParameterError("eval: no sequences");
  checkSweep(spec.sweep);
  m.setFfnOverride(nullptr);
  const std::vector<EvalCandidate> cands = evalCandidates(spec, m);
  const EvalOptions& eo = spec.options;
  auto figs = evaluateQuality(m, spec.reference, cands, seqs, eo, job);

  nlohmann::json results = nlohmann::json::array();
  for (size_t i = 1; i < figs.size(); ++i) {
    nlohmann::json r = figs[i].toJson();
    r["router"] = cands[i - 1].name;
    r["loss_delta"] = figs[i].loss - figs[0].loss;
    results.push_back(r);
  }
  if (spec.speed) {
    const std::vector<int64_t> prompt(seqs[0].begin(), seqs[0].begin() + 1);
    int genTokens = 32;
    if (m.config().pos == PosKind::Learned) genTokens = std::max(1, std::min(genTokens, m.config().maxPos - 1));
    SpeedTiming generate;  // masked-LM models do not generate
    if (m.config().causal)
      generate = [&](const FfnOverrides& ffns) {
        return generationSpeeds(m, ffns, prompt, genTokens, spec.speedSeconds, 3, &job);
      };
    addSpeedResults(
        results, cands, spec.reference,
        [&](const FfnOverrides& ffns) { return forwardSpeeds(m, ffns, seqs, eo.batch, spec.speedSeconds, 3, &job); },
        generate, job, m);
  }
  int64_t tokens = 0;
  for (const auto& s : seqs) tokens += static_cast<int64_t>(s.size());
  nlohmann::json corpus = {
      {"path", spec.corpusPath}, {"sequences", seqs.size()}, {"tokens", tokens}, {"seq_len", spec.seqLen}};
  const bool idsFile = std::filesystem::path(spec.corpusPath).extension() == ".ids";
  const SequenceOptions splitDefaults;  // readSequences splits with these
  return evalDocument(m, spec, figs[0], std::move(results), std::move(corpus),
                      m.config().causal ? "next-token" : "masked-lm", idsFile ? Split::All : spec.split,
                      splitDefaults.seed, splitDefaults.heldOutFraction, job);
}

nlohmann::json evalDocumentFor(const std::filesystem::path& out, const nlohmann::json& doc0) {
  // Version 2 (analysis/io/links.h): every input is a link relative to `out`.
  // The document is assembled before its folder is known (runEvaluation);
  // this is its writer, not a rewrite of a written artefact.
  nlohmann::json doc = doc0;
  auto pathLink = [&](nlohmann::json& obj, const std::string& fingerprint) {
    if (!obj.is_object() || !obj.contains("path") || !obj["path"].is_string() || obj["path"].get<std::string>().empty())
      return;
    const nlohmann::json l = makeLink(out, obj["path"].get<std::string>(), fingerprint);
    obj["path"] = l["path"];
    if (l.contains("absolute")) obj["absolute"] = l["absolute"];
  };
  auto artefactLink = [&](const nlohmann::json& p) -> nlohmann::json {
    if (!p.is_string() || p.get<std::string>().empty()) return p;
    const std::filesystem::path dir = p.get<std::string>();
    std::error_code ec;
    return makeLink(out, dir, std::filesystem::is_directory(dir, ec) ? folderFingerprint(dir) : std::string());
  };
  if (doc.contains("model")) pathLink(doc["model"], "");
  if (doc.contains("corpus")) pathLink(doc["corpus"], "");
  if (doc.contains("source") && doc["source"].is_object()) {
    auto& src = doc["source"];
    for (const char* key : {"partition", "moe"})
      if (src.contains(key)) src[key] = artefactLink(src[key]);
    if (src.contains("routers") && src["routers"].is_array())
      for (auto& r : src["routers"]) r = artefactLink(r);
  }
  doc["version"] = 2;
  return doc;
}

void writeEvalFolder(const std::filesystem::path& out, bool force, const nlohmann::json& doc,
                     const std::vector<std::filesystem::path>& inputs) {
  const std::string text = evalDocumentFor(out, doc).dump(2) + "\n";
  writeFolderAtomic(
      out, force, [&](const std::filesystem::path& tmp) { writeFileAtomic(tmp / "eval.json", text); }, inputs);
}

}  // namespace moefy
