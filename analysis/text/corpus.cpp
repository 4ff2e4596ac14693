// Streaming corpora: .txt (blank-line separated documents), directory trees
// (one document per file, first-level subfolder = category) and .jsonl.
// Opening a corpus scans it once (document offsets, categories, validation)
// without keeping any text; documents are re-read from disk on demand.
#include "analysis/text/corpus.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unordered_map>

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"
#include "analysis/io/json_input.h"
#include "analysis/jobs/job.h"
#include "analysis/text/line_reader.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------

class TxtCorpus : public Corpus {
 public:
  TxtCorpus(const fs::path& p) {
    path_ = p;
    LineReader r(p);
    std::string line;
    bool inDoc = false;
    while (r.next(line)) {
      checkTextLine(line, p, r.lineNo());
      if (isBlankLine(line)) {
        inDoc = false;
      } else if (!inDoc) {
        starts_.push_back({r.lineStart(), r.lineNo() - 1});
        inDoc = true;
      }
    }
    documentCount_ = static_cast<int64_t>(starts_.size());
    if (documentCount_ == 0) throw FormatError(p.string() + ": empty corpus (no non-blank lines)");
  }
  std::string kind() const override { return "txt"; }

  void forEachDocument(const std::function<bool(const Document&)>& fn) const override {
    LineReader r(path_);
    std::string line;
    Document d;
    bool inDoc = false;
    auto flush = [&]() -> bool {
      if (!inDoc) return true;
      inDoc = false;
      bool go = fn(d);
      ++d.id;
      return go;
    };
    d.id = 0;
    while (r.next(line)) {
      checkTextLine(line, path_, r.lineNo());  // the file may have changed since open()
      if (isBlankLine(line)) {
        if (!flush()) return;
        continue;
      }
      if (!inDoc) {
        inDoc = true;
        d.text.clear();
        d.source = path_.string() + ":" + std::to_string(r.lineNo());
      } else {
        d.text += '\n';
      }
      d.text += line;
    }
    flush();
  }

  Document document(int64_t id) const override {
    if (id < 0 || id >= documentCount_) throw ParameterError(path_.string() + ": document id " + std::to_string(id) + " out of range");
    LineReader r(path_);
    r.seek(starts_[id].first, starts_[id].second);
    Document d;
    d.id = id;
    std::string line;
    bool first = true;
    while (r.next(line)) {
      checkTextLine(line, path_, r.lineNo());
      if (isBlankLine(line)) break;
      if (first) d.source = path_.string() + ":" + std::to_string(r.lineNo());
      if (!first) d.text += '\n';
      d.text += line;
      first = false;
    }
    return d;
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> starts_;  // (byte offset, line number - 1)
};

// ---------------------------------------------------------------------------

class JsonlCorpus : public Corpus {
 public:
  JsonlCorpus(const fs::path& p, const CorpusOptions& o) : opt_(o) {
    path_ = p;
    LineReader r(p);
    std::string line;
    std::unordered_map<std::string, int32_t> catIndex;
    while (r.next(line)) {
      checkTextLine(line, p, r.lineNo());
      if (isBlankLine(line)) continue;
      auto [text, label] = parse(line, r.lineNo());
      int32_t cat = -1;
      if (label) {
        auto it = catIndex.find(*label);
        if (it == catIndex.end()) {
          cat = static_cast<int32_t>(categories_.size());
          catIndex.emplace(*label, cat);
          categories_.push_back(*label);
        } else {
          cat = it->second;
        }
      }
      starts_.push_back({r.lineStart(), r.lineNo() - 1});
      cats_.push_back(cat);
    }
    documentCount_ = static_cast<int64_t>(starts_.size());
    if (documentCount_ == 0) throw FormatError(p.string() + ": empty corpus (no JSON lines)");
  }
  std::string kind() const override { return "jsonl"; }

  void forEachDocument(const std::function<bool(const Document&)>& fn) const override {
    LineReader r(path_);
    std::string line;
    Document d;
    int64_t id = 0;
    while (r.next(line)) {
      checkTextLine(line, path_, r.lineNo());
      if (isBlankLine(line)) continue;
      if (id >= documentCount_) break;
      d.id = id;
      d.text = parse(line, r.lineNo()).first;
      d.category = cats_[id];
      d.source = path_.string() + ":" + std::to_string(r.lineNo());
      ++id;
      if (!fn(d)) return;
    }
  }

  Document document(int64_t id) const override {
    if (id < 0 || id >= documentCount_) throw ParameterError(path_.string() + ": document id " + std::to_string(id) + " out of range");
    LineReader r(path_);
    r.seek(starts_[id].first, starts_[id].second);
    std::string line;
    if (!r.next(line)) throw IoError(path_.string() + ": document " + std::to_string(id) + " vanished (file changed?)");
    checkTextLine(line, path_, r.lineNo());
    Document d;
    d.id = id;
    d.text = parse(line, r.lineNo()).first;
    d.category = cats_[id];
    d.source = path_.string() + ":" + std::to_string(r.lineNo());
    return d;
  }

 private:
  std::pair<std::string, std::optional<std::string>> parse(const std::string& line, int64_t lineNo) const {
    const std::string where = path_.string() + ":" + std::to_string(lineNo);
    const json j = parseJson(line, where);
    if (!j.is_object()) throw FormatError(where + ": expected a JSON object");
    auto it = j.find(opt_.textField);
    if (it == j.end()) throw FormatError(where + ": missing field '" + opt_.textField + "'");
    if (!it->is_string()) throw FormatError(where + ": field '" + opt_.textField + "' is not a string");
    std::optional<std::string> label;
    if (!opt_.labelField.empty()) {
      auto lt = j.find(opt_.labelField);
      if (lt == j.end() || lt->is_null()) throw FormatError(where + ": missing label field '" + opt_.labelField + "'");
      label = lt->is_string() ? lt->get<std::string>() : lt->dump();
    }
    return {it->get<std::string>(), label};
  }

  CorpusOptions opt_;
  std::vector<std::pair<int64_t, int64_t>> starts_;
  std::vector<int32_t> cats_;
};

// ---------------------------------------------------------------------------

class DirCorpus : public Corpus {
 public:
  explicit DirCorpus(const fs::path& p) {
    path_ = p;
    // (listed path, category) of every document. The category is the
    // first-level folder the file is listed under, whatever a symbolic link
    // points to (a hub-cache snapshot links every file into blobs/); linked
    // folders are followed, with a guard against loops.
    std::vector<std::pair<fs::path, std::string>> files;
    std::vector<std::pair<dev_t, ino_t>> ancestors;
    walk(p, "", 0, ancestors, files);
    std::sort(files.begin(), files.end());
    std::map<std::string, int32_t> catIndex;
    for (const auto& [f, cat] : files) {
      checkHead(f);
      files_.push_back(f);
      if (cat.empty()) {
        cats_.push_back(-1);
      } else {
        auto [it, inserted] = catIndex.emplace(cat, static_cast<int32_t>(categories_.size()));
        if (inserted) categories_.push_back(cat);
        cats_.push_back(it->second);
      }
    }
    documentCount_ = static_cast<int64_t>(files_.size());
    if (documentCount_ == 0) throw FormatError(p.string() + ": directory has no text files");
  }
  std::string kind() const override { return "dir"; }

  /// Lists `dir` (reached as `listed`, under the first-level folder `cat`)
  /// into `out`. Hidden entries are skipped; symbolic links are followed
  /// (stat, not lstat); a folder that is one of its own ancestors (a link
  /// loop) is refused naming the link.
  static void walk(const fs::path& dir, const std::string& cat, int depth, std::vector<std::pair<dev_t, ino_t>>& ancestors,
                   std::vector<std::pair<fs::path, std::string>>& out) {
    struct stat ds{};
    if (::stat(dir.c_str(), &ds) != 0) throw IoError(dir.string() + ": cannot list (" + std::strerror(errno) + ")");
    const std::pair<dev_t, ino_t> id{ds.st_dev, ds.st_ino};
    if (std::find(ancestors.begin(), ancestors.end(), id) != ancestors.end())
      throw FormatError(dir.string() + ": is a link to one of its own parent folders (a loop); remove the link");
    if (depth > 64) throw FormatError(dir.string() + ": folders nested more than 64 deep");
    ancestors.push_back(id);
    std::error_code ec;
    std::vector<fs::path> entries;
    for (auto it = fs::directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec))
      entries.push_back(it->path());
    if (ec) throw IoError(dir.string() + ": cannot list (" + ec.message() + ")");
    std::sort(entries.begin(), entries.end());
    for (const auto& e : entries) {
      const std::string name = e.filename().string();
      if (!name.empty() && name[0] == '.') continue;
      struct stat st{};
      if (::stat(e.c_str(), &st) != 0) {
        if (errno == ENOENT) throw IoError(e.string() + ": broken symbolic link");
        throw IoError(e.string() + ": cannot read (" + std::strerror(errno) + ")");
      }
      if (S_ISDIR(st.st_mode)) {
        walk(e, depth == 0 ? name : cat, depth + 1, ancestors, out);
      } else if (S_ISREG(st.st_mode)) {
        if (st.st_size > 0) out.emplace_back(e, cat);
      } else {
        throw FormatError(e.string() + ": is not a regular file or folder (a FIFO, socket or device); remove it from "
                                       "the corpus folder");
      }
    }
    ancestors.pop_back();
  }

  void forEachDocument(const std::function<bool(const Document&)>& fn) const override {
    for (int64_t id = 0; id < documentCount_; ++id)
      if (!fn(document(id))) return;
  }

  Document document(int64_t id) const override {
    if (id < 0 || id >= documentCount_) throw ParameterError(path_.string() + ": document id " + std::to_string(id) + " out of range");
    const fs::path& f = files_[id];
    LineReader r(f);
    Document d;
    d.id = id;
    d.category = cats_[id];
    d.source = f.string();
    std::string line;
    bool first = true;
    while (r.next(line)) {
      checkTextLine(line, f, r.lineNo());
      if (!first) d.text += '\n';
      d.text += line;
      first = false;
    }
    return d;
  }

 private:
  // Rejects binary files early (NUL byte in the first 8 KiB).
  static void checkHead(const fs::path& f) {
    requireInputFile(f);
    std::ifstream in(f, std::ios::binary);
    if (!in) throw IoError(f.string() + ": cannot open");
    std::string buf(8192, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.resize(static_cast<size_t>(in.gcount()));
    size_t nul = buf.find('\0');
    if (nul != std::string::npos) {
      int64_t line = 1 + std::count(buf.begin(), buf.begin() + static_cast<long>(nul), '\n');
      throw FormatError(f.string() + ":" + std::to_string(line) + ": binary file (NUL byte at offset " + std::to_string(nul) + ")");
    }
  }

  std::vector<fs::path> files_;
  std::vector<int32_t> cats_;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

std::unique_ptr<Corpus> Corpus::open(const fs::path& path, const CorpusOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(path.string() + ": no such file or directory");
  if (fs::is_directory(path)) return std::make_unique<DirCorpus>(path);
  if (path.extension() == ".jsonl" || path.extension() == ".ndjson") return std::make_unique<JsonlCorpus>(path, options);
  if (!options.labelField.empty()) throw ParameterError(path.string() + ": a label field only applies to .jsonl corpora");
  return std::make_unique<TxtCorpus>(path);
}

bool isHeldOut(int64_t docId, uint64_t seed, double fraction) {
  if (fraction <= 0) return false;
  if (fraction >= 1) return true;
  uint64_t h = splitmix64(splitmix64(static_cast<uint64_t>(docId)) ^ (seed * 0xD1B54A32D192ED03ull + 0x5851F42D4C957F2Dull));
  double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
  return u < fraction;
}

void forEachSequence(const Corpus& corpus, const Tokenizer& tokenizer, const SequenceOptions& o,
                     const std::function<bool(const Sequence&)>& fn, JobContext* job) {
  if (o.seqLen < 1) throw ParameterError("seq-len must be >= 1 (got " + std::to_string(o.seqLen) + ")");
  if (o.stride < 0) throw ParameterError("stride must be >= 0 (got " + std::to_string(o.stride) + ")");
  if (o.stride > o.seqLen) throw ParameterError("stride (" + std::to_string(o.stride) + ") must not exceed seq-len (" + std::to_string(o.seqLen) + ")");
  if (o.tokenBudget < 0) throw ParameterError("token budget must be >= 0");
  if (o.heldOutFraction < 0 || o.heldOutFraction > 1) throw ParameterError("held-out fraction must be in [0, 1]");
  const int stride = o.stride == 0 ? o.seqLen : o.stride;
  const int64_t n = corpus.documentCount();
  int64_t emitted = 0;
  int64_t done = 0;
  bool stop = false;

  auto handle = [&](const Document& d) -> bool {
    if (job) {
      job->checkCancel();
      if (o.reportProgress) job->setProgress(static_cast<double>(done) / static_cast<double>(std::max<int64_t>(n, 1)));
    }
    ++done;
    const double fraction = static_cast<double>(done) / static_cast<double>(std::max<int64_t>(n, 1));
    if (o.split != Split::All) {
      bool held = isHeldOut(d.id, o.seed, o.heldOutFraction);
      if ((o.split == Split::HeldOut) != held) return true;
    }
    std::vector<int32_t> ids = tokenizer.encode(d.text, o.addSpecialTokens);
    const auto len = static_cast<int64_t>(ids.size());
    for (int64_t start = 0; start < len; start += stride) {
      int64_t end = std::min<int64_t>(start + o.seqLen, len);
      if (o.tokenBudget > 0) {
        const int64_t left = o.tokenBudget - emitted;
        end = std::min<int64_t>(end, start + left);
        // A piece that would leave 1 .. minLength - 1 tokens of the budget,
        // which no later window may use, gives up enough of its tail for the
        // next window to be minLength long: the budget is then met exactly
        // (it lost those tokens before, e.g. 19,999 of --tokens 20000).
        const int64_t after = left - (end - start);
        if (after > 0 && after < o.minLength && end - start - (o.minLength - after) >= o.minLength)
          end -= o.minLength - after;
      }
      if (end - start >= o.minLength && end > start) {
        Sequence s;
        s.ids.assign(ids.begin() + start, ids.begin() + end);
        s.docId = d.id;
        s.category = d.category;
        s.start = static_cast<int32_t>(start);
        s.sourceFraction = fraction;
        emitted += end - start;
        if (!fn(s)) {
          stop = true;
          return false;
        }
      }
      // Stop when the budget is spent, or when what is left of it is shorter
      // than any window may be (no later document could use it; the rest of
      // the corpus was tokenised for nothing before).
      if (o.tokenBudget > 0 && o.tokenBudget - emitted < std::max(1, o.minLength)) {
        stop = true;
        return false;
      }
      if (start + o.seqLen >= len) break;
    }
    return true;
  };

  if (!o.shuffle) {
    corpus.forEachDocument([&](const Document& d) { return handle(d); });
  } else {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(splitmix64(o.seed ^ 0x5EED5EED5EED5EEDull));
    for (int64_t i = n - 1; i > 0; --i) {
      // mt19937_64 is fully specified, unlike std::uniform_int_distribution:
      // the order is the same with every standard library.
      auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
    for (int64_t id : order) {
      // Skip held-out filtering before reading the document from disk.
      if (o.split != Split::All && (o.split == Split::HeldOut) != isHeldOut(id, o.seed, o.heldOutFraction)) {
        ++done;
        continue;
      }
      if (!handle(corpus.document(id)) || stop) break;
    }
  }
  if (job && o.reportProgress) job->setProgress(1.0);
}

std::vector<Sequence> collectSequences(const Corpus& corpus, const Tokenizer& tokenizer, const SequenceOptions& options,
                                       JobContext* job) {
  std::vector<Sequence> out;
  forEachSequence(corpus, tokenizer, options, [&](const Sequence& s) {
    out.push_back(s);
    return true;
  }, job);
  return out;
}

}  // namespace moefy
