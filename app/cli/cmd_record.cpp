// moefy record: activation statistics, co-activation counts and sampled rows.
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/distributed.h"
#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/model/site.h"
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/text/corpus.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

nlohmann::json summaryJson(const Recording& r) {
  nlohmann::json j;
  j["out"] = r.dir().string();
  j["tokens"] = r.tokens();
  j["sequences"] = r.sequences();
  j["layers"] = r.layers();
  j["sites"] = siteNames(r.sites());
  j["samples"] = r.sampleCount();
  j["active"] = r.activeRule().toJson();
  nlohmann::json density = nlohmann::json::object();
  for (int L : r.layers()) {
    // Keyed by layer number for dense single-stack recordings (as before), by site name otherwise.
    const std::string key = r.encoderDecoder() || r.nativeMoe() ? r.site(L).name() : std::to_string(L);
    const double c = r.count(L).sum().item<double>();
    const int64_t tokens = r.siteTokens(L);  // an expert's routed tokens
    density[key] = tokens > 0 ? c / (static_cast<double>(tokens) * r.width(L)) : 0.0;
  }
  j["density"] = density;
  if (r.nativeMoe()) {
    // Per MoE layer: the share of the tokens routing to each expert (usage / tokens).
    nlohmann::json usage = nlohmann::json::object();
    for (int l : r.routingLayers()) {
      at::Tensor u =
          r.expertUsage(l).to(at::kDouble).div(static_cast<double>(std::max<int64_t>(1, r.tokens()))).contiguous();
      usage[Site::ofLayer(l).name()] = std::vector<double>(u.data_ptr<double>(), u.data_ptr<double>() + u.numel());
    }
    j["expert_usage"] = usage;
  }
  return j;
}

void printSummary(const Args& a, const Recording& r, double seconds) {
  nlohmann::json j = summaryJson(r);
  if (seconds >= 0) j["seconds"] = seconds;
  if (a.json()) {
    printJson(j);
    return;
  }
  const bool sites = r.encoderDecoder() || r.nativeMoe();
  const size_t nL = r.layers().size();
  std::cout << "wrote " << r.dir().string() << ": " << r.tokens() << " tokens, " << r.sequences()
            << (r.sequences() == 1 ? " sequence, " : " sequences, ") << nL
            << (sites ? (nL == 1 ? " site, " : " sites, ") : (nL == 1 ? " layer, " : " layers, ")) << r.sampleCount()
            << " samples, active rule " << r.activeRule().toString()
            << (r.hasSoftCoact() ? ", soft co-activation recorded" : "") << "\n";
  for (int L : r.layers()) {
    if (r.encoderDecoder() || r.nativeMoe()) {
      const std::string name = r.site(L).name();
      std::cout << "  site " << name << ": density " << j["density"][name].get<double>() << " over " << r.siteTokens(L)
                << " tokens\n";
    } else {
      std::cout << "  layer " << L << ": density " << j["density"][std::to_string(L)].get<double>() << "\n";
    }
  }
}

int runRecord(const Args& a) {
  auto job = makeCliJob(a);
  const fs::path out = a.text("out");
  if (a.flag("merge")) {
    dist::requireSingleProcess("record --merge");
    if (a.positional.size() < 2) throw ParameterError("--merge needs at least two recordings: --merge A B --out C");
    std::vector<fs::path> in(a.positional.begin(), a.positional.end());
    mergeRecordings(in, out, a.flag("force"), *job);
    printSummary(a, Recording::open(out), -1);
    return 0;
  }
  // Setup (options, model, corpus): under mpirun every rank does it and the
  // ranks agree on the outcome before any work (dist::agree), so that an
  // error is reported once and no rank is left waiting.
  RecordOptions o;
  LoadedModel loaded;
  SourceInfo info;
  SequenceSource source;
  PairSource pairSource;
  std::unique_ptr<Corpus> corpus;
  std::unique_ptr<ParallelCorpus> pairs;
  std::exception_ptr setupError;
  try {
    const fs::path modelDir = a.pos(0, "MODEL_DIR");
    const fs::path corpusPath = a.pos(1, "CORPUS");
    if (a.positional.size() > 2)
      throw ParameterError("unexpected argument '" + a.positional[2] +
                           "' (record takes MODEL_DIR CORPUS; --merge takes several recordings)");

    o = recordOptionsFrom(a);
    parseRecordSplit(o.split);  // validates

    job->setStage("load model");
    loaded = loadModel(modelDir, o.device);
    if (loaded.isMoe())
      throw ParameterError(modelDir.string() + ": is a MoE export; record the dense model it came from");
    requireRecordable(loaded.model->config(), modelDir.string());
    const ModelConfig& config = loaded.model->config();
    // The sites are checked against the model before any corpus work.
    resolveRecordSites(config, o.layers, o.sites);
    const fs::path absCorpus = fs::absolute(corpusPath).lexically_normal();
    if (corpusPath.extension() == ".safetensors") {
      if (o.split != "all") throw ParameterError("--split applies to text corpora, not to pre-tokenised files");
      if (o.shuffle) throw ParameterError("--shuffle applies to text corpora, not to pre-tokenised files");
      source = tokenFileSource(absCorpus, info, o.maxTokens);
    } else if (isParallelInput(corpusPath, o, config.encoderDecoder)) {
      if (!loaded.tokenizer)
        throw FormatError(modelDir.string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                          "); a parallel corpus is tokenised with the model's tokenizer");
      pairs = openParallelInput(absCorpus, o);
      pairSource = parallelCorpusSource(*pairs, *loaded.tokenizer, config, o, job.get(), &info);
    } else {
      if (!o.targetFile.empty()) throw ParameterError("--target: a target file pairs with a text CORPUS file");
      if (!loaded.tokenizer)
        throw FormatError(modelDir.string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                          "); give a pre-tokenised .safetensors file as CORPUS instead");
      corpus = Corpus::open(absCorpus);
      source = textCorpusSource(*corpus, *loaded.tokenizer, absCorpus, o, job.get(), &info);
    }
  } catch (...) {
    setupError = std::current_exception();
  }
  dist::agree(setupError);
  const RecordSummary s = pairSource ? recordSeq2SeqActivations(*loaded.model, pairSource, info, o, out, *job)
                                     : recordActivations(*loaded.model, source, info, o, out, *job);
  // Under mpirun rank 0 wrote the folder (the other ranks' file systems may not see it).
  if (dist::rank() == 0) printSummary(a, Recording::open(out), s.seconds);
  return 0;
}

CommandRegistrar recordCmd(recordOptionTable(), runRecord);

}  // namespace

}  // namespace moefy::cli
