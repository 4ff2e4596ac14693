#include "analysis/record/record_options.h"

#include <sstream>

#include "analysis/common/error.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace {
std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}
}  // namespace

std::vector<int> parseLayerList(const std::string& text, const std::string& option) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    long long v = -1;
    try {
      size_t used = 0;
      v = std::stoll(item, &used);
      if (used != item.size()) v = -1;
    } catch (const std::exception&) {
      v = -1;
    }
    if (v < 0 || v > 1000000) throw ParameterError(option + ": '" + item + "' is not a layer index");
    out.push_back(static_cast<int>(v));
  }
  return out;
}

std::optional<ActiveRule> parseActiveOption(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty()) return std::nullopt;
  return ActiveRule::parse(t);
}

Split parseRecordSplit(const std::string& name) {
  if (name == "all") return Split::All;
  if (name == "train") return Split::Train;
  if (name == "held_out") return Split::HeldOut;
  throw ParameterError("--split must be all, train or held_out, got '" + name + "'");
}

SequenceSource textCorpusSource(const Corpus& corpus, const Tokenizer& tokenizer, const std::filesystem::path& corpusPath,
                                const RecordOptions& o, JobContext* job, SourceInfo* info) {
  info->path = std::filesystem::absolute(corpusPath).lexically_normal().string();
  info->kind = corpus.kind();
  info->categories = corpus.categories();
  SequenceOptions so;
  so.seqLen = o.seqLen;
  so.tokenBudget = o.maxTokens;
  so.seed = o.seed;
  so.shuffle = o.shuffle;
  so.split = parseRecordSplit(o.split);
  so.reportProgress = false;  // recordActivations reports processed tokens against the corpus's estimated total
  const Corpus* cp = &corpus;
  const Tokenizer* tk = &tokenizer;
  return [cp, tk, so, job](const std::function<bool(const Sequence&)>& fn) { forEachSequence(*cp, *tk, so, fn, job); };
}

}  // namespace moefy
