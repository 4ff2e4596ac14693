// moefy record: activation statistics, co-activation counts and sampled rows.
#include <filesystem>
#include <iostream>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/text/corpus.h"
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
  j["samples"] = r.sampleCount();
  j["active"] = r.activeRule().toJson();
  nlohmann::json density = nlohmann::json::object();
  for (int L : r.layers()) {
    const double c = r.count(L).sum().item<double>();
    density[std::to_string(L)] = r.tokens() > 0 ? c / (static_cast<double>(r.tokens()) * r.dFF()) : 0.0;
  }
  j["density"] = density;
  return j;
}

void printSummary(const Args& a, const Recording& r, double seconds) {
  nlohmann::json j = summaryJson(r);
  if (seconds >= 0) j["seconds"] = seconds;
  if (a.json()) {
    printJson(j);
    return;
  }
  std::cout << "wrote " << r.dir().string() << ": " << r.tokens() << " tokens, " << r.sequences() << " sequences, "
            << r.layers().size() << " layers, " << r.sampleCount() << " samples, active rule "
            << r.activeRule().toString() << "\n";
  for (int L : r.layers())
    std::cout << "  layer " << L << ": density " << j["density"][std::to_string(L)].get<double>() << "\n";
}

int runRecord(const Args& a) {
  auto job = makeCliJob(a);
  const fs::path out = a.text("out");
  if (a.flag("merge")) {
    if (a.positional.size() < 2) throw ParameterError("--merge needs at least two recordings: --merge A B --out C");
    std::vector<fs::path> in(a.positional.begin(), a.positional.end());
    mergeRecordings(in, out, a.flag("force"), *job);
    printSummary(a, Recording::open(out), -1);
    return 0;
  }
  const fs::path modelDir = a.pos(0, "MODEL_DIR");
  const fs::path corpusPath = a.pos(1, "CORPUS");
  if (a.positional.size() > 2)
    throw ParameterError("unexpected argument '" + a.positional[2] +
                         "' (record takes MODEL_DIR CORPUS; --merge takes several recordings)");

  RecordOptions o = recordOptionsFrom(a);
  parseRecordSplit(o.split);  // validates

  job->setStage("load model");
  auto loaded = loadModel(modelDir);
  if (loaded.isMoe()) throw ParameterError(modelDir.string() + ": is a MoE export; record the dense model it came from");
  requireRecordable(loaded.model->config(), modelDir.string());
  SourceInfo info;
  SequenceSource source;
  std::unique_ptr<Corpus> corpus;
  const fs::path absCorpus = fs::absolute(corpusPath).lexically_normal();
  if (corpusPath.extension() == ".safetensors") {
    if (o.split != "all") throw ParameterError("--split applies to text corpora, not to pre-tokenised files");
    if (o.shuffle) throw ParameterError("--shuffle applies to text corpora, not to pre-tokenised files");
    source = tokenFileSource(absCorpus, info, o.maxTokens);
  } else {
    if (!loaded.tokenizer)
      throw FormatError(modelDir.string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                        "); give a pre-tokenised .safetensors file as CORPUS instead");
    corpus = Corpus::open(absCorpus);
    source = textCorpusSource(*corpus, *loaded.tokenizer, absCorpus, o, job.get(), &info);
  }
  RecordSummary s = recordActivations(*loaded.model, source, info, o, out, *job);
  printSummary(a, Recording::open(out), s.seconds);
  return 0;
}

CommandRegistrar recordCmd(recordOptionTable(), runRecord);

}  // namespace

}  // namespace moefy::cli
