#include "analysis/eval/eval_data.h"

#include <algorithm>
#include <iterator>
#include <sstream>

#include "analysis/eval/sequences.h"
#include "analysis/io/links.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

const nlohmann::json* member(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int64_t integerOr(const nlohmann::json& j, const char* key, int64_t dflt) {
  const nlohmann::json* v = member(j, key);
  return v && v->is_number_integer() ? v->get<int64_t>() : dflt;
}

std::string stringOr(const nlohmann::json& j, const char* key) {
  const nlohmann::json* v = member(j, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

std::optional<Split> splitOf(const std::string& name) {
  if (name.empty()) return std::nullopt;
  try {
    return parseSplitName(name);
  } catch (const std::exception&) {
    return std::nullopt;  // validateEvalDocument refuses it; an unknown name reads as unrecorded here
  }
}

const char* splitPhrase(Split s) {
  return s == Split::HeldOut ? "held-out split" : s == Split::Train ? "training split" : "all documents";
}

std::string splitText(const DataSelection& d, bool brief = false) {
  if (d.wholeFile) return "whole file";
  if (!d.split) return "split not recorded";
  std::ostringstream s;
  s << splitPhrase(*d.split);
  if (*d.split != Split::All && !brief)
    s << " (seed " << d.splitSeed << ", " << d.heldOutFraction * 100 << " % held out)";
  return s.str();
}

// Whether `inner` lies inside the folder `outer` (component-wise prefix).
bool inside(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty() && std::next(o) == outer.end()) break;  // "a/b/" has an empty last component
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

bool inSplit(int64_t doc, const DataSelection& d) {
  if (d.wholeFile || !d.split || *d.split == Split::All) return true;
  return (*d.split == Split::HeldOut) == isHeldOut(doc, d.splitSeed, d.heldOutFraction);
}

}  // namespace

DataSelection evalDataSelection(const nlohmann::json& doc, const fs::path& evalDir) {
  DataSelection d;
  const nlohmann::json* corpus = member(doc, "corpus");
  if (corpus && corpus->is_object()) {
    d.corpus = resolveLinkPath(evalDir, *corpus);
    d.fingerprint = stringOr(*corpus, "fingerprint");
    d.split = splitOf(stringOr(*corpus, "split"));
    d.splitSeed = static_cast<uint64_t>(std::max<int64_t>(0, integerOr(*corpus, "split_seed", 0)));
    if (const nlohmann::json* f = member(*corpus, "held_out_fraction"); f && f->is_number())
      d.heldOutFraction = f->get<double>();
    d.sequences = integerOr(*corpus, "sequences", -1);
    d.tokens = integerOr(*corpus, "tokens", -1);
    d.seqLen = static_cast<int>(std::clamp<int64_t>(integerOr(*corpus, "seq_len", 0), 0, 1 << 30));
  }
  // A token-id file is read whole, whatever --split said.
  if (d.corpus.extension() == ".ids") d.wholeFile = true;
  d.seed = integerOr(doc, "seed", -1);
  if (d.seed < 0)
    if (const nlohmann::json* p = member(doc, "provenance"))
      if (const nlohmann::json* o = member(*p, "options")) d.seed = integerOr(*o, "seed", -1);
  return d;
}

DataSelection recordingDataSelection(const nlohmann::json& manifest) {
  DataSelection d;
  if (const nlohmann::json* corpus = member(manifest, "corpus")) {
    const std::string path = stringOr(*corpus, "path");
    if (!path.empty()) d.corpus = fs::absolute(path).lexically_normal();
    d.fingerprint = stringOr(*corpus, "fingerprint");
    d.wholeFile = stringOr(*corpus, "kind") == "tokens";
  }
  if (const nlohmann::json* o = member(manifest, "options")) {
    // The recorder splits with its own seed (record_options.cpp textCorpusSource).
    const std::string split = stringOr(*o, "split");
    d.split = split.empty() ? std::optional<Split>(Split::All) : splitOf(split);
    d.splitSeed = static_cast<uint64_t>(std::max<int64_t>(0, integerOr(*o, "seed", 0)));
    d.seed = integerOr(*o, "seed", -1);
    d.seqLen = static_cast<int>(std::clamp<int64_t>(integerOr(*o, "seq_len", 0), 0, 1 << 30));
  } else {
    d.split = Split::All;  // recorders before the option recorded everything they read
  }
  d.sequences = integerOr(manifest, "sequences", -1);
  d.tokens = integerOr(manifest, "tokens", -1);
  return d;
}

std::string describeData(const DataSelection& d, bool brief) {
  if (d.corpus.empty() && !d.split && d.sequences < 0 && d.tokens < 0 && d.seed < 0)
    return "not recorded (written before evaluations recorded their data)";
  std::ostringstream s;
  const fs::path name = d.corpus.has_filename() ? d.corpus.filename() : d.corpus.parent_path().filename();
  s << splitText(d, brief) << " of "
    << (d.corpus.empty() ? std::string("a corpus not recorded")
        : brief          ? name.string()
                         : d.corpus.string());
  if (!d.fingerprint.empty() && !brief) s << " (fingerprint " << d.fingerprint << ")";
  if (d.sequences >= 0) {
    s << ", " << d.sequences << (d.sequences == 1 ? " sequence" : " sequences");
    if (d.seqLen > 0) s << " of <= " << d.seqLen << " tokens";
    if (d.tokens >= 0) s << " (" << d.tokens << " tokens)";
  } else if (d.tokens >= 0) {
    s << ", " << d.tokens << " tokens";
  }
  s << (d.seed >= 0 ? ", seed " + std::to_string(d.seed) : std::string(", seed not recorded"));
  return s.str();
}

DataOverlap dataOverlap(const DataSelection& rec, const DataSelection& ev, int64_t documentCount) {
  DataOverlap r;
  if (rec.corpus.empty() || ev.corpus.empty()) {
    r.reason = std::string("the ") + (rec.corpus.empty() ? "recording" : "evaluation") + " does not record its corpus";
    return r;
  }
  const std::string recText = splitText(rec) + " of " + rec.corpus.string();
  const std::string evText = splitText(ev) + " of " + ev.corpus.string();
  const bool samePath = rec.corpus.lexically_normal() == ev.corpus.lexically_normal();
  const bool sameContent = !rec.fingerprint.empty() && rec.fingerprint == ev.fingerprint;
  auto readsAll = [](const DataSelection& d) { return d.wholeFile || (d.split && *d.split == Split::All); };
  if (!samePath && !sameContent) {
    // A corpus folder inside another (brown/ and brown/heldout/) shares its
    // documents, but under other document ids, so splits cannot be compared.
    const bool evInside = inside(ev.corpus, rec.corpus), recInside = inside(rec.corpus, ev.corpus);
    if (!evInside && !recInside) {
      r.verdict = DataOverlap::Disjoint;
      r.reason = "different corpora: the recording read " + recText + ", the evaluation " + evText;
      return r;
    }
    const DataSelection& outer = evInside ? rec : ev;
    r.verdict = readsAll(outer) ? DataOverlap::Overlap : DataOverlap::Unknown;
    r.reason =
        std::string(evInside ? "the evaluation corpus " + ev.corpus.string() + " lies inside the recording corpus "
                             : "the recording corpus " + rec.corpus.string() + " lies inside the evaluation corpus ") +
        (evInside ? rec.corpus.string() : ev.corpus.string()) + " (the recording read " + recText +
        ", the evaluation " + evText + ")";
    return r;
  }
  // One side read every document: whatever the other's split, they share documents.
  if (readsAll(rec) || readsAll(ev) || (rec.split && ev.split && *rec.split == *ev.split)) {
    r.verdict = DataOverlap::Overlap;
    r.reason = "the evaluation reads documents the recording read: the recording read " + recText +
               ", the evaluation " + evText;
    return r;
  }
  if (!rec.split || !ev.split) {
    r.reason = std::string("the ") + (!rec.split ? "recording" : "evaluation") +
               " does not record its split (same corpus " + ev.corpus.string() + ")";
    return r;
  }
  // Train against held-out of the same corpus.
  if (rec.splitSeed == ev.splitSeed && rec.heldOutFraction == ev.heldOutFraction) {
    r.verdict = DataOverlap::Disjoint;
    r.sharedDocuments = 0;
    r.reason = "complementary splits of " + ev.corpus.string() + ": the recording read " + splitText(rec) +
               ", the evaluation " + splitText(ev);
    return r;
  }
  r.verdict = DataOverlap::Overlap;
  if (documentCount > 0) {
    int64_t shared = 0;
    for (int64_t doc = 0; doc < documentCount; ++doc) shared += inSplit(doc, rec) && inSplit(doc, ev);
    r.sharedDocuments = shared;
    if (shared == 0) r.verdict = DataOverlap::Disjoint;
  }
  r.reason = "the splits of " + ev.corpus.string() +
             " differ in seed or held-out fraction (recording: " + splitText(rec) + ", evaluation: " + splitText(ev) +
             ")" +
             (r.sharedDocuments >= 0 ? ": " + std::to_string(r.sharedDocuments) + " of " +
                                           std::to_string(documentCount) + " documents are in both"
                                     : ": their documents overlap");
  return r;
}

}  // namespace moefy
