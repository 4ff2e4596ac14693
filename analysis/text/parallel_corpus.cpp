// Parallel corpora (.tsv, .jsonl, two line-aligned files) and their T5-style
// tokenisation. Opening scans the files once (pair offsets, validation)
// without keeping any text; pairs are re-read from disk on demand.
#include "analysis/text/parallel_corpus.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>

#include "analysis/common/error.h"
#include "analysis/io/json_input.h"
#include "analysis/jobs/job.h"
#include "analysis/text/line_reader.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string at(const fs::path& file, int64_t lineNo) { return file.string() + ":" + std::to_string(lineNo); }

// A .jsonl field: the key itself, else (for a name with dots) a path of nested objects.
const json* findField(const json& object, const std::string& name) {
  auto it = object.find(name);
  if (it != object.end()) return &*it;
  if (name.find('.') == std::string::npos) return nullptr;
  const json* node = &object;
  size_t begin = 0;
  while (true) {
    const size_t dot = name.find('.', begin);
    const std::string key = name.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
    if (!node->is_object()) return nullptr;
    auto child = node->find(key);
    if (child == node->end()) return nullptr;
    node = &*child;
    if (dot == std::string::npos) return node;
    begin = dot + 1;
  }
}

void checkNotEmpty(const std::string& text, const char* side, const std::string& where) {
  if (isBlankLine(text)) throw FormatError(where + ": empty " + side + " text");
}

}  // namespace

std::unique_ptr<ParallelCorpus> ParallelCorpus::open(const fs::path& path, const ParallelCorpusOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(path.string() + ": no such file or directory");
  const std::string ext = path.extension().string();
  std::unique_ptr<ParallelCorpus> c(new ParallelCorpus());
  c->path_ = path;
  c->options_ = options;
  if (ext == ".tsv") {
    const ParallelCorpusOptions defaults;
    if (options.sourceField != defaults.sourceField || options.targetField != defaults.targetField)
      throw ParameterError(path.string() + ": source and target fields only apply to .jsonl parallel corpora");
    c->kind_ = "tsv";
  } else if (ext == ".jsonl" || ext == ".ndjson") {
    if (options.sourceField.empty() || options.targetField.empty())
      throw ParameterError(path.string() + ": the source and target field names must not be empty");
    if (options.sourceField == options.targetField)
      throw ParameterError(path.string() + ": the source and target fields are both '" + options.sourceField + "'");
    c->kind_ = "jsonl";
  } else {
    throw ParameterError(path.string() +
                         ": a parallel corpus is a .tsv (source<TAB>target) or .jsonl file, or two line-aligned files");
  }
  LineReader r(path);
  std::string line;
  while (r.next(line)) {
    checkTextLine(line, path, r.lineNo());
    if (isBlankLine(line)) continue;
    c->parseLine(line, r.lineNo());
    c->starts_.push_back({r.lineStart(), r.lineNo() - 1});
  }
  if (c->starts_.empty())
    throw FormatError(path.string() + ": empty parallel corpus (no " + (c->kind_ == "tsv" ? "non-blank" : "JSON") +
                      " lines)");
  return c;
}

std::unique_ptr<ParallelCorpus> ParallelCorpus::openAligned(const fs::path& sourceFile, const fs::path& targetFile) {
  std::error_code ec;
  for (const auto& p : {sourceFile, targetFile})
    if (!fs::exists(p, ec)) throw IoError(p.string() + ": no such file or directory");
  if (fs::equivalent(sourceFile, targetFile, ec))
    throw ParameterError(sourceFile.string() + ": the source and target files are the same file");
  std::unique_ptr<ParallelCorpus> c(new ParallelCorpus());
  c->kind_ = "aligned";
  c->path_ = sourceFile;
  c->targetPath_ = targetFile;
  // Each file: every line validated and non-blank; then the counts compared.
  auto scan = [](const fs::path& p, std::vector<std::pair<int64_t, int64_t>>& starts) {
    LineReader r(p);
    std::string line;
    while (r.next(line)) {
      checkTextLine(line, p, r.lineNo());
      if (isBlankLine(line))
        throw FormatError(at(p, r.lineNo()) +
                          ": empty line (line-aligned files pair line N of both files; an empty sentence is refused)");
      starts.push_back({r.lineStart(), r.lineNo() - 1});
    }
  };
  scan(sourceFile, c->starts_);
  scan(targetFile, c->tgtStarts_);
  if (c->starts_.size() != c->tgtStarts_.size())
    throw FormatError(sourceFile.string() + " has " + std::to_string(c->starts_.size()) + " lines, " +
                      targetFile.string() + " has " + std::to_string(c->tgtStarts_.size()) +
                      " lines: line-aligned source and target files must have the same number of lines");
  if (c->starts_.empty()) throw FormatError(sourceFile.string() + ": empty parallel corpus (no lines)");
  return c;
}

std::pair<std::string, std::string> ParallelCorpus::parseLine(const std::string& line, int64_t lineNo) const {
  const std::string where = at(path_, lineNo);
  std::string source, target;
  if (kind_ == "tsv") {
    const auto tabs = std::count(line.begin(), line.end(), '\t');
    if (tabs == 0) throw FormatError(where + ": no tab (a .tsv line is source<TAB>target)");
    if (tabs > 1)
      throw FormatError(where + ": " + std::to_string(tabs) +
                        " tabs (a .tsv line is source<TAB>target; a tab inside a text cannot be written in .tsv: "
                        "use .jsonl or two line-aligned files)");
    const size_t tab = line.find('\t');
    source = line.substr(0, tab);
    target = line.substr(tab + 1);
  } else {
    const json j = parseJson(line, where);
    if (!j.is_object()) throw FormatError(where + ": expected a JSON object");
    auto get = [&](const std::string& field) {
      const json* v = findField(j, field);
      if (!v) throw FormatError(where + ": missing field '" + field + "'");
      if (!v->is_string()) throw FormatError(where + ": field '" + field + "' is not a string");
      return v->get<std::string>();
    };
    source = get(options_.sourceField);
    target = get(options_.targetField);
  }
  checkNotEmpty(source, "source", where);
  checkNotEmpty(target, "target", where);
  return {source, target};
}

void ParallelCorpus::forEachPair(const std::function<bool(const SentencePair&)>& fn, Split split, uint64_t seed,
                                 double heldOutFraction) const {
  if (heldOutFraction < 0 || heldOutFraction > 1) throw ParameterError("held-out fraction must be in [0, 1]");
  auto wanted = [&](int64_t id) {
    return split == Split::All || (split == Split::HeldOut) == isHeldOut(id, seed, heldOutFraction);
  };
  const int64_t n = pairCount();
  if (kind_ == "aligned") {
    // Both files in lockstep; every line is re-validated (the files may have changed since open()).
    LineReader rs(path_), rt(targetPath_);
    std::string ls, lt;
    for (int64_t id = 0; id < n; ++id) {
      if (!rs.next(ls) || !rt.next(lt))
        throw IoError((rs.lineNo() <= id ? path_ : targetPath_).string() + ": pair " + std::to_string(id) +
                      " vanished (file changed?)");
      checkTextLine(ls, path_, rs.lineNo());
      checkTextLine(lt, targetPath_, rt.lineNo());
      if (!wanted(id)) continue;
      SentencePair p;
      p.id = id;
      p.line = rs.lineNo();
      p.where = at(path_, rs.lineNo()) + " / " + at(targetPath_, rt.lineNo());
      checkNotEmpty(ls, "source", at(path_, rs.lineNo()));
      checkNotEmpty(lt, "target", at(targetPath_, rt.lineNo()));
      p.source = std::move(ls);
      p.target = std::move(lt);
      if (!fn(p)) return;
    }
    return;
  }
  LineReader r(path_);
  std::string line;
  int64_t id = 0;
  while (id < n && r.next(line)) {
    checkTextLine(line, path_, r.lineNo());
    if (isBlankLine(line)) continue;
    const int64_t pid = id++;
    if (!wanted(pid)) continue;
    SentencePair p;
    p.id = pid;
    p.line = r.lineNo();
    p.where = at(path_, r.lineNo());
    std::tie(p.source, p.target) = parseLine(line, r.lineNo());
    if (!fn(p)) return;
  }
  if (id < n) throw IoError(path_.string() + ": pair " + std::to_string(id) + " vanished (file changed?)");
}

SentencePair ParallelCorpus::pair(int64_t id) const {
  if (id < 0 || id >= pairCount())
    throw ParameterError(path_.string() + ": pair id " + std::to_string(id) + " out of range");
  return readAt(id);
}

SentencePair ParallelCorpus::readAt(int64_t id) const {
  const auto i = static_cast<size_t>(id);
  SentencePair p;
  p.id = id;
  LineReader r(path_);
  r.seek(starts_[i].first, starts_[i].second);
  std::string line;
  if (!r.next(line)) throw IoError(path_.string() + ": pair " + std::to_string(id) + " vanished (file changed?)");
  checkTextLine(line, path_, r.lineNo());
  p.line = r.lineNo();
  if (kind_ != "aligned") {
    p.where = at(path_, r.lineNo());
    std::tie(p.source, p.target) = parseLine(line, r.lineNo());
    return p;
  }
  LineReader rt(targetPath_);
  rt.seek(tgtStarts_[i].first, tgtStarts_[i].second);
  std::string target;
  if (!rt.next(target))
    throw IoError(targetPath_.string() + ": pair " + std::to_string(id) + " vanished (file changed?)");
  checkTextLine(target, targetPath_, rt.lineNo());
  p.where = at(path_, r.lineNo()) + " / " + at(targetPath_, rt.lineNo());
  checkNotEmpty(line, "source", at(path_, r.lineNo()));
  checkNotEmpty(target, "target", at(targetPath_, rt.lineNo()));
  p.source = std::move(line);
  p.target = std::move(target);
  return p;
}

// ---------------------------------------------------------------------------

std::vector<int32_t> encodeWithEos(const Tokenizer& tokenizer, std::string_view text, int32_t eosId) {
  if (eosId < 0) throw ParameterError("end-of-sequence id must be >= 0 (got " + std::to_string(eosId) + ")");
  std::vector<int32_t> ids = tokenizer.encode(text, true);
  if (ids.empty() || ids.back() != eosId) ids.push_back(eosId);
  return ids;
}

std::vector<int32_t> shiftRight(const std::vector<int32_t>& labels, int32_t decoderStartId) {
  std::vector<int32_t> out;
  out.reserve(std::max<size_t>(labels.size(), 1));
  out.push_back(decoderStartId);
  if (labels.size() > 1) out.insert(out.end(), labels.begin(), labels.end() - 1);
  return out;
}

Seq2SeqIds tokenizePair(const Tokenizer& tokenizer, std::string_view source, std::string_view target,
                        const Seq2SeqOptions& options) {
  int32_t eos = options.eosId;
  if (eos < 0) {
    auto t = tokenizer.eosId();
    if (!t) throw FormatError("the tokenizer (" + tokenizer.kind() + ") has no end-of-sequence token; give its id");
    eos = *t;
  }
  Seq2SeqIds ids;
  ids.source = encodeWithEos(tokenizer, source, eos);
  ids.labels = encodeWithEos(tokenizer, target, eos);
  ids.decoderInput = shiftRight(ids.labels, options.decoderStartId);
  return ids;
}

void forEachTokenizedPair(const ParallelCorpus& corpus, const Tokenizer& tokenizer, const Seq2SeqOptions& o,
                          const std::function<bool(const TokenizedPair&)>& fn, JobContext* job) {
  if (o.heldOutFraction < 0 || o.heldOutFraction > 1) throw ParameterError("held-out fraction must be in [0, 1]");
  const int64_t n = std::max<int64_t>(corpus.pairCount(), 1);
  corpus.forEachPair(
      [&](const SentencePair& p) {
        if (job) {
          job->checkCancel();
          if (o.reportProgress) job->setProgress(static_cast<double>(p.id) / static_cast<double>(n));
        }
        TokenizedPair t;
        t.id = p.id;
        t.line = p.line;
        t.ids = tokenizePair(tokenizer, p.source, p.target, o);
        return fn(t);
      },
      o.split, o.seed, o.heldOutFraction);
  if (job && o.reportProgress) job->setProgress(1.0);
}

}  // namespace moefy
