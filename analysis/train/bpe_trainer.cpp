// Byte-level BPE training with incremental pair counts, and tokenizer.json IO.
#include "analysis/train/bpe_trainer.h"

#include <oniguruma.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/jobs/job.h"

namespace moefy {

namespace {

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Gpt2Regex {
  OnigRegex re = nullptr;
  Gpt2Regex() {
    OnigEncoding enc = ONIG_ENCODING_UTF8;
    onig_initialize(&enc, 1);
    OnigErrorInfo info;
    const auto* p = reinterpret_cast<const OnigUChar*>(kGpt2Pattern);
    int r = onig_new(&re, p, p + std::char_traits<char>::length(kGpt2Pattern), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                     ONIG_SYNTAX_ONIGURUMA, &info);
    if (r != ONIG_NORMAL) throw FormatError("GPT-2 pre-tokenizer regex failed to compile (Oniguruma error " + std::to_string(r) + ")");
  }
};

const Gpt2Regex& gpt2Regex() {
  static Gpt2Regex re;
  return re;
}

// Length of the valid UTF-8 sequence at s[i], or 0 if invalid.
size_t utf8Len(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return n;
}

std::string sanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8Len(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string codepointUtf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

struct ByteLevelTable {
  std::array<std::string, 256> chars;
  std::unordered_map<std::string, uint8_t> inverse;
  ByteLevelTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      chars[b] = codepointUtf8(cp);
      inverse[chars[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelTable& byteTable() {
  static ByteLevelTable t;
  return t;
}

// Byte-level spelling -> raw bytes; throws FormatError on characters outside the table.
std::string byteLevelDecode(const std::string& s, const std::string& where) {
  const auto& inv = byteTable().inverse;
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8Len(s, i);
    if (n == 0) throw FormatError(where + ": token '" + s + "' is not valid UTF-8");
    auto it = inv.find(s.substr(i, n));
    if (it == inv.end()) throw FormatError(where + ": token '" + s + "' has a character outside the byte-level alphabet");
    out += static_cast<char>(it->second);
    i += n;
  }
  return out;
}

inline uint64_t pairKey(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

}  // namespace

std::vector<std::string> gpt2PreTokenize(std::string_view input) {
  std::string text = sanitizeUtf8(input);
  std::vector<std::string> pieces;
  const auto& re = gpt2Regex();
  OnigRegion* region = onig_region_new();
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = str + text.size();
  size_t pos = 0;
  while (pos < text.size()) {
    int r = onig_search(re.re, str, end, str + pos, end, region, ONIG_OPTION_NONE);
    if (r == ONIG_MISMATCH) {
      pieces.emplace_back(text.substr(pos));
      break;
    }
    if (r < 0) {
      onig_region_free(region, 1);
      throw FormatError("GPT-2 pre-tokenizer: Oniguruma search failed (error " + std::to_string(r) + ")");
    }
    size_t b = static_cast<size_t>(region->beg[0]), e = static_cast<size_t>(region->end[0]);
    if (b > pos) pieces.emplace_back(text.substr(pos, b - pos));
    if (e > b) {
      pieces.emplace_back(text.substr(b, e - b));
      pos = e;
    } else {  // empty match: step over one character
      size_t n = std::max<size_t>(1, utf8Len(text, b));
      pieces.emplace_back(text.substr(b, n));
      pos = b + n;
    }
  }
  onig_region_free(region, 1);
  return pieces;
}

const std::string& byteLevelChar(uint8_t b) { return byteTable().chars[b]; }

std::string byteLevelEncode(std::string_view bytes) {
  std::string out;
  for (char c : bytes) out += byteLevelChar(static_cast<uint8_t>(c));
  return out;
}

// ---------------------------------------------------------------- training

BpeTrainer::BpeTrainer(BpeTrainOptions options) : options_(std::move(options)) {
  const int least = static_cast<int>(BpeModel::specialsOf(options_.style).size()) + 257;
  if (options_.vocabSize < least)
    throw ParameterError("--vocab: must be at least " + std::to_string(least) +
                         " (special tokens + 256 bytes + 1 merge), got " + std::to_string(options_.vocabSize));
  if (options_.minFrequency < 1) throw ParameterError("--min-frequency: must be >= 1");
}

void BpeTrainer::addText(std::string_view text) {
  for (auto& piece : gpt2PreTokenize(text)) {
    ++wordCounts_[piece];
    ++totalWords_;
  }
}

BpeModel BpeTrainer::train(JobContext& job) const {
  job.setStage("bpe");
  BpeModel model;
  model.style = options_.style;
  model.specials = BpeModel::specialsOf(options_.style);
  model.tokens = model.specials;
  const auto nSpecial = static_cast<int32_t>(model.specials.size());
  for (int b = 0; b < 256; ++b) model.tokens.emplace_back(1, static_cast<char>(b));
  std::unordered_map<std::string, int32_t> idOf;
  for (int32_t i = nSpecial; i < static_cast<int32_t>(model.tokens.size()); ++i) idOf[model.tokens[i]] = i;

  // Words in a deterministic order (sorted bytes), as id sequences.
  std::vector<std::pair<std::string, int64_t>> sorted(wordCounts_.begin(), wordCounts_.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> counts(sorted.size());
  std::unordered_map<uint64_t, int64_t> pairCount;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < sorted.size(); ++w) {
    counts[w] = sorted[w].second;
    for (char c : sorted[w].first) words[w].push_back(nSpecial + static_cast<uint8_t>(c));
    const auto& s = words[w];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pairKey(s[i], s[i + 1]);
      pairCount[k] += counts[w];
      auto& v = where[k];
      if (v.empty() || v.back() != static_cast<int32_t>(w)) v.push_back(static_cast<int32_t>(w));
    }
  }

  struct Entry {
    int64_t count;
    uint64_t key;
    bool operator<(const Entry& o) const {  // max-heap: larger count, then smaller key first
      return count != o.count ? count < o.count : key > o.key;
    }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : pairCount) heap.push({c, k});

  std::vector<int32_t> stamp(words.size(), -1);
  const auto target = static_cast<size_t>(options_.vocabSize);
  int32_t step = 0;
  while (model.tokens.size() < target && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto pc = pairCount.find(top.key);
    if (pc == pairCount.end() || pc->second != top.count) continue;  // stale entry
    if (top.count < options_.minFrequency) break;
    int32_t a = static_cast<int32_t>(top.key >> 32), b = static_cast<int32_t>(top.key & 0xFFFFFFFFu);
    std::string merged = model.tokens[a] + model.tokens[b];
    int32_t newId;
    if (auto it = idOf.find(merged); it != idOf.end()) {
      newId = it->second;
    } else {
      newId = static_cast<int32_t>(model.tokens.size());
      model.tokens.push_back(merged);
      idOf.emplace(merged, newId);
    }
    model.merges.emplace_back(a, b);

    std::unordered_map<uint64_t, int64_t> delta;
    std::vector<int32_t> affected = std::move(where[top.key]);
    where.erase(top.key);
    for (int32_t w : affected) {
      if (stamp[w] == step) continue;
      stamp[w] = step;
      auto& s = words[w];
      const int64_t c = counts[w];
      bool found = false;
      for (size_t i = 0; i + 1 < s.size(); ++i)
        if (s[i] == a && s[i + 1] == b) found = true;
      if (!found) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[pairKey(s[i], s[i + 1])] -= c;
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          out.push_back(newId);
          i += 2;
        } else {
          out.push_back(s[i++]);
        }
      }
      s = std::move(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t k = pairKey(s[i], s[i + 1]);
        delta[k] += c;
        if (s[i] == newId || s[i + 1] == newId) {
          auto& v = where[k];
          if (v.empty() || v.back() != w) v.push_back(w);
        }
      }
    }
    for (const auto& [k, d] : delta) {
      if (d == 0) continue;
      int64_t& cur = pairCount[k];
      cur += d;
      if (cur <= 0) {
        pairCount.erase(k);
      } else {
        heap.push({cur, k});
      }
    }
    pairCount.erase(top.key);
    ++step;
    if (step % 64 == 0) {
      job.checkCancel();
      job.setProgress(static_cast<double>(model.tokens.size()) / static_cast<double>(target));
    }
  }
  job.setProgress(1.0);
  return model;
}

// ---------------------------------------------------------------- tokenizer.json

std::vector<std::string> BpeModel::specialsOf(BpeStyle style) {
  if (style == BpeStyle::T5) return {"<pad>", "</s>", "<unk>"};
  return {"<|endoftext|>"};
}

std::string BpeModel::toTokenizerJson() const {
  using oj = nlohmann::ordered_json;
  oj added = oj::array();
  oj vocab = oj::object();
  for (size_t i = 0; i < specials.size(); ++i) {
    added.push_back({{"id", i},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", style == BpeStyle::Gpt2},  // as GPT-2's and T5's own files
                     {"special", true}});
    vocab[specials[i]] = i;
  }
  for (size_t i = specials.size(); i < tokens.size(); ++i) vocab[byteLevelEncode(tokens[i])] = i;
  oj mergeList = oj::array();
  for (const auto& [a, b] : merges) mergeList.push_back(byteLevelEncode(tokens[a]) + " " + byteLevelEncode(tokens[b]));
  // GPT-2 style: "<|endoftext|> $A" (BOS first); T5 style: "$A </s>" (T5TokenizerFast).
  const std::string& mark = style == BpeStyle::T5 ? specials[1] : specials[0];
  const int32_t markId = style == BpeStyle::T5 ? 1 : 0;
  oj sp = {{"SpecialToken", {{"id", mark}, {"type_id", 0}}}};
  oj seqA = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, seqB = {{"Sequence", {{"id", "B"}, {"type_id", 0}}}};
  oj single = style == BpeStyle::T5 ? oj::array({seqA, sp}) : oj::array({sp, seqA});
  oj pair = style == BpeStyle::T5 ? oj::array({seqA, sp, seqB, sp}) : oj::array({sp, seqA, sp, seqB});
  oj post = {{"type", "TemplateProcessing"},
             {"single", single},
             {"pair", pair},
             {"special_tokens", {{mark, {{"id", mark}, {"ids", oj::array({markId})}, {"tokens", oj::array({mark})}}}}}};
  oj doc = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", mergeList}}}};
  return doc.dump(2) + "\n";
}

BpeModel BpeModel::fromTokenizerJson(const std::filesystem::path& path) {
  const std::string where = path.string();
  nlohmann::json j = readJsonFile(path);
  if (!j.contains("model") || j["model"].value("type", "") != "BPE") throw FormatError(where + ": model.type is not BPE");
  if (!j.contains("added_tokens") || !j["added_tokens"].is_array() || j["added_tokens"].empty())
    throw FormatError(where + ": no added_tokens (expected the special tokens from id 0)");
  BpeModel m;
  m.specials.clear();
  for (const auto& sp : j["added_tokens"]) {
    if (!sp.is_object() || !sp.contains("id") || !sp["id"].is_number_integer() ||
        sp["id"].get<int64_t>() != static_cast<int64_t>(m.specials.size()) || !sp.contains("content") ||
        !sp["content"].is_string())
      throw FormatError(where + ": added_tokens[" + std::to_string(m.specials.size()) + "] must be a token with id " +
                        std::to_string(m.specials.size()));
    m.specials.push_back(sp["content"].get<std::string>());
  }
  if (m.specials == BpeModel::specialsOf(BpeStyle::T5)) {
    m.style = BpeStyle::T5;
  } else if (m.specials.size() == 1) {
    m.style = BpeStyle::Gpt2;
  } else {
    throw FormatError(where + ": added_tokens are neither one special token (GPT-2 style) nor <pad> </s> <unk> (T5)");
  }
  const auto nSpecial = m.specials.size();
  const auto& vocab = j["model"]["vocab"];
  if (!vocab.is_object()) throw FormatError(where + ": model.vocab is not an object");
  m.tokens.assign(vocab.size(), std::string());
  std::vector<bool> seen(vocab.size(), false);
  std::unordered_map<std::string, int32_t> idOf;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id =
        jsonInteger(it.value(), 0, static_cast<int64_t>(vocab.size()) - 1, where + ": model.vocab['" + it.key() + "']");
    if (id < 0 || id >= static_cast<int64_t>(vocab.size()) || seen[id])
      throw FormatError(where + ": model.vocab: id " + std::to_string(id) + " of '" + it.key() + "' is out of range or repeated");
    seen[id] = true;
    idOf[it.key()] = static_cast<int32_t>(id);
    m.tokens[id] = static_cast<size_t>(id) < nSpecial ? it.key() : byteLevelDecode(it.key(), where);
  }
  for (size_t i = 0; i < nSpecial; ++i)
    if (i >= m.tokens.size() || m.tokens[i] != m.specials[i])
      throw FormatError(where + ": vocab id " + std::to_string(i) + " is not the special token '" + m.specials[i] +
                        "'");
  for (const auto& mj : j["model"]["merges"]) {
    std::string l, r;
    if (mj.is_string()) {
      auto s = mj.get<std::string>();
      auto sp2 = s.find(' ');
      if (sp2 == std::string::npos) throw FormatError(where + ": merge '" + s + "' has no space");
      l = s.substr(0, sp2);
      r = s.substr(sp2 + 1);
    } else if (mj.is_array() && mj.size() == 2) {
      l = mj[0].get<std::string>();
      r = mj[1].get<std::string>();
    } else {
      throw FormatError(where + ": malformed merge entry");
    }
    auto il = idOf.find(l), ir = idOf.find(r);
    if (il == idOf.end() || ir == idOf.end() || !idOf.count(l + r))
      throw FormatError(where + ": merge '" + l + " " + r + "' refers to tokens not in the vocab");
    m.merges.emplace_back(il->second, ir->second);
  }
  return m;
}

// ---------------------------------------------------------------- encoding

BpeEncoder::BpeEncoder(BpeModel model) : model_(std::move(model)) {
  std::unordered_map<std::string, int32_t> idOf;
  for (auto i = static_cast<int32_t>(model_.specials.size()); i < static_cast<int32_t>(model_.tokens.size()); ++i)
    idOf.emplace(model_.tokens[i], i);
  for (int b = 0; b < 256; ++b)
    if (!idOf.count(std::string(1, static_cast<char>(b))))
      throw FormatError("byte-level BPE: byte " + std::to_string(b) + " has no token");
  for (int32_t r = 0; r < static_cast<int32_t>(model_.merges.size()); ++r) {
    auto [a, b] = model_.merges[r];
    uint64_t k = pairKey(a, b);
    if (!ranks_.count(k)) ranks_.emplace(k, std::make_pair(r, idOf.at(model_.tokens[a] + model_.tokens[b])));
  }
  byteId_.resize(256);
  for (int b = 0; b < 256; ++b) byteId_[b] = idOf.at(std::string(1, static_cast<char>(b)));
}

void BpeEncoder::encodeWord(const std::string& word, std::vector<int32_t>& out) const {
  std::vector<int32_t> s;
  s.reserve(word.size());
  for (char c : word) s.push_back(byteId_[static_cast<uint8_t>(c)]);
  while (s.size() > 1) {
    int32_t bestRank = INT32_MAX, bestId = -1;
    size_t bestPos = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = ranks_.find(pairKey(s[i], s[i + 1]));
      if (it != ranks_.end() && it->second.first < bestRank) {
        bestRank = it->second.first;
        bestId = it->second.second;
        bestPos = i;
      }
    }
    if (bestId < 0) break;
    s[bestPos] = bestId;
    s.erase(s.begin() + static_cast<std::ptrdiff_t>(bestPos) + 1);
  }
  out.insert(out.end(), s.begin(), s.end());
}

std::vector<int32_t> BpeEncoder::encode(std::string_view text, bool addSpecial) const {
  std::vector<int32_t> ids;
  const bool t5 = model_.style == BpeStyle::T5;
  if (addSpecial && !t5) ids.push_back(0);
  const auto& specials = model_.specials;
  size_t pos = 0;
  while (pos <= text.size()) {
    // The earliest special token at or after pos (the longest one on a tie), split out as HF's added tokens are.
    size_t hit = std::string_view::npos, hitLen = 0;
    int32_t hitId = -1;
    for (size_t i = 0; i < specials.size(); ++i) {
      size_t h = text.find(specials[i], pos);
      if (h != std::string_view::npos && (h < hit || (h == hit && specials[i].size() > hitLen))) {
        hit = h;
        hitLen = specials[i].size();
        hitId = static_cast<int32_t>(i);
      }
    }
    std::string_view seg = text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos);
    if (!seg.empty())
      for (const auto& w : gpt2PreTokenize(seg)) encodeWord(w, ids);
    if (hit == std::string_view::npos) break;
    ids.push_back(hitId);
    pos = hit + hitLen;
  }
  if (addSpecial && t5) ids.push_back(1);
  return ids;
}

std::string BpeEncoder::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids)
    if (id >= static_cast<int32_t>(model_.specials.size()) && id < static_cast<int32_t>(model_.tokens.size()))
      out += model_.tokens[id];
  return out;
}

std::vector<std::filesystem::path> corpusTextFiles(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return {path};
  if (!fs::is_directory(path, ec)) throw IoError(path.string() + ": no such file or directory");
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file() && it->path().extension() == ".txt") files.push_back(it->path());
  if (ec) throw IoError(path.string() + ": cannot list (" + ec.message() + ")");
  if (files.empty()) throw FormatError(path.string() + ": no .txt files");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace moefy
