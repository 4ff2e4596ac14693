// Tokenizer loading: Hugging Face tokenizer.json (HfTokenizer below) and
// SentencePiece .model files (sentencepiece_model.cpp), with the pipeline
// of the Rust `tokenizers` crate:
//   added tokens (non-normalized) -> normalizer -> added tokens (normalized)
//   -> pre-tokenizer -> model -> post-processor.
#include "analysis/text/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"
#include "analysis/io/json_input.h"
#include "analysis/text/hf_components.h"
#include "analysis/text/hf_tokenizer.h"
#include "analysis/text/unicode.h"
#include "analysis/text/utf8.h"

namespace moefy {

using json = nlohmann::json;

namespace {

// Regular files only, opened without blocking (a FIFO is refused).
std::string readFile(const std::filesystem::path& p) { return readInputFile(p); }

bool isWordChar(char32_t c) { return c == '_' || uni::isAlphanumeric(c); }

}  // namespace

// ---------------------------------------------------------------------------
// Added-token matcher: leftmost-longest over a byte trie.

void AddedTokenMatcher::add(const std::string& content, int32_t tokenIndex) {
  if (content.empty()) return;
  int32_t node = 0;
  for (unsigned char c : content) {
    uint64_t k = (static_cast<uint64_t>(node) << 8) | c;
    auto it = edges_.find(k);
    if (it == edges_.end()) {
      int32_t nn = static_cast<int32_t>(terminal_.size());
      terminal_.push_back(-1);
      edges_.emplace(k, nn);
      node = nn;
    } else {
      node = it->second;
    }
  }
  terminal_[node] = tokenIndex;
  first_[static_cast<unsigned char>(content[0])] = true;
  empty_ = false;
}

void AddedTokenMatcher::findAll(std::string_view s, std::vector<Match>& out) const {
  out.clear();
  if (empty_) return;
  size_t i = 0;
  while (i < s.size()) {
    if (!first_[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    int32_t node = 0;
    int32_t best = -1;
    size_t bestEnd = 0;
    for (size_t k = i; k < s.size(); ++k) {
      auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[k]));
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[node] >= 0) {
        best = terminal_[node];
        bestEnd = k + 1;
      }
    }
    if (best >= 0) {
      out.push_back({i, bestEnd, best});
      i = bestEnd;
    } else {
      ++i;
    }
  }
}

// ---------------------------------------------------------------------------

HfTokenizer::HfTokenizer() = default;
HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::fromJson(const std::string& text, const std::string& where) {
  json j = parseJson(text, where);  // not const: operator[] on a const json with a missing key is undefined
  if (!j.is_object() || !j.contains("model")) throw FormatError(where + ": not a tokenizer.json (no \"model\")");
  auto t = std::make_unique<HfTokenizer>();
  t->where_ = where;
  try {
    t->normalizer_ = hf::makeNormalizer(j.value("normalizer", json()), where);
    t->preTokenizer_ = hf::makePreTokenizer(j.value("pre_tokenizer", json()), where);
    t->model_ = hf::makeModel(j["model"], where);
    t->postProcessor_ = hf::makePostProcessor(j.value("post_processor", json()), where);
    t->decoder_ = hf::makeDecoder(j.value("decoder", json()), where);
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        AddedToken tok;
        tok.id = jsonInt(a.at("id"), 0, std::numeric_limits<int32_t>::max(), where + ": added_tokens id");
        tok.content = a.at("content").get<std::string>();
        tok.singleWord = a.value("single_word", false);
        tok.lstrip = a.value("lstrip", false);
        tok.rstrip = a.value("rstrip", false);
        tok.special = a.value("special", false);
        tok.normalized = a.contains("normalized") && !a["normalized"].is_null() ? a["normalized"].get<bool>() : !tok.special;
        t->addToken(std::move(tok));
      }
    }
  } catch (const json::exception& e) {
    throw FormatError(where + ": malformed tokenizer.json: " + e.what());
  }
  t->finish();
  return t;
}

void HfTokenizer::addToken(AddedToken tok) {
  auto idx = static_cast<int32_t>(added_.size());
  addedById_[tok.id] = idx;
  addedByContent_[tok.content] = idx;
  if (tok.normalized && normalizer_) {
    std::string n = tok.content;
    normalizer_->apply(n);
    normalizedMatcher_.add(n, idx);
  } else {
    rawMatcher_.add(tok.content, idx);
  }
  added_.push_back(std::move(tok));
}

void HfTokenizer::finish() {
  int32_t maxId = model_ ? model_->size() - 1 : -1;
  for (int32_t id = maxId; id >= 0; --id) {
    if (model_->idToToken(id)) {
      maxId = id;
      break;
    }
  }
  for (const auto& a : added_) maxId = std::max(maxId, a.id);
  vocabSize_ = maxId + 1;
  if (postProcessor_) {
    auto pre = postProcessor_->prefixIds();
    auto suf = postProcessor_->suffixIds();
    if (!pre.empty()) bos_ = pre.front();
    if (!suf.empty()) eos_ = suf.back();
  }
  auto find = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* n : names)
      if (auto id = tokenToId(n)) return id;
    return std::nullopt;
  };
  if (!bos_) bos_ = find({"<|begin_of_text|>", "<s>", "<bos>", "[CLS]", "<|endoftext|>"});
  if (!eos_) eos_ = find({"<|end_of_text|>", "</s>", "<eos>", "[SEP]", "<|endoftext|>", "<|im_end|>"});
  pad_ = find({"<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>"});
}

void HfTokenizer::applyTokenConfig(const std::filesystem::path& configPath) {
  if (!std::filesystem::exists(configPath)) return;
  json j = readJsonFile(configPath);
  if (!j.is_object()) throw FormatError(configPath.string() + ": not a JSON object");
  auto tokenOf = [&](const char* key) -> std::optional<int32_t> {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    std::string s;
    if (j[key].is_string()) {
      s = j[key].get<std::string>();
    } else if (j[key].is_object() && j[key].contains("content")) {
      s = j[key]["content"].get<std::string>();
    } else {
      return std::nullopt;
    }
    return tokenToId(s);
  };
  if (auto b = tokenOf("bos_token")) bos_ = b;
  if (auto e = tokenOf("eos_token")) eos_ = e;
  if (auto p = tokenOf("pad_token")) pad_ = p;

  // transformers' LlamaTokenizerFast / GemmaTokenizerFast (CodeLlama alike)
  // replace the tokenizer.json post-processor in __init__ (update_post_processor):
  // single = "[bos:0] $A:0 [eos:0]" by add_bos_token (default True) and
  // add_eos_token (default False), bos/eos the config's tokens or the class
  // defaults. Other classes (PreTrainedTokenizerFast, Qwen2Tokenizer, ...)
  // keep tokenizer.json's post-processor.
  std::string cls = j.contains("tokenizer_class") && j["tokenizer_class"].is_string()
                        ? j["tokenizer_class"].get<std::string>()
                        : std::string();
  if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);
  if (cls != "LlamaTokenizer" && cls != "GemmaTokenizer" && cls != "CodeLlamaTokenizer") return;
  const bool addBos = hf::configFlag(j, "add_bos_token", true, configPath.string());
  const bool addEos = hf::configFlag(j, "add_eos_token", false, configPath.string());
  const bool gemma = cls == "GemmaTokenizer";
  auto special = [&](const char* key, const char* def, bool wanted) -> std::optional<int32_t> {
    if (!wanted) return std::nullopt;
    std::optional<int32_t> id = tokenOf(key);
    if (!id && !(j.contains(key) && !j[key].is_null())) id = tokenToId(def);
    if (!id)
      throw FormatError(configPath.string() + ": add_" + std::string(key) + " is true but " + key +
                        " is not a token of the vocabulary");
    return id;
  };
  const auto bos = special("bos_token", gemma ? "<bos>" : "<s>", addBos);
  const auto eos = special("eos_token", gemma ? "<eos>" : "</s>", addEos);
  json single = json::array(), specials = json::object();
  auto addSpecial = [&](const char* name, int32_t id) {
    single.push_back({{"SpecialToken", {{"id", name}, {"type_id", 0}}}});
    specials[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
  };
  if (bos) addSpecial("bos", *bos);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (eos) addSpecial("eos", *eos);
  postProcessor_ = hf::makePostProcessor(
      {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}}, configPath.string());
  if (bos) bos_ = bos;
  if (eos) eos_ = eos;
}

void HfTokenizer::encodeSection(std::string_view text, bool atStart, std::vector<int32_t>& out) const {
  // Second level: normalize, then split on normalized added tokens.
  std::string norm(text);
  if (normalizer_) normalizer_->apply(norm);
  if (norm.empty()) return;
  thread_local std::vector<AddedTokenMatcher::Match> matches;
  std::vector<AddedTokenMatcher::Match> local;
  normalizedMatcher_.findAll(norm, local);
  std::vector<Segment> segs;
  splitOnAdded(norm, local, segs);
  hf::Pieces pieces;
  for (const auto& sg : segs) {
    if (sg.token >= 0) {
      out.push_back(added_[sg.token].id);
      continue;
    }
    if (sg.b <= sg.a) continue;
    pieces.clear();
    pieces.push_back({norm.substr(sg.a, sg.b - sg.a), atStart && sg.a == 0});
    if (preTokenizer_) preTokenizer_->apply(pieces);
    for (const auto& p : pieces) model_->tokenize(p.text, out);
  }
}

void HfTokenizer::splitOnAdded(std::string_view s, const std::vector<AddedTokenMatcher::Match>& matches,
                               std::vector<Segment>& segs) const {
  // Rust AddedVocabulary::find_matches (single_word, lstrip, rstrip).
  segs.clear();
  size_t startOffset = 0;
  for (const auto& m : matches) {
    size_t start = m.start, stop = m.end;
    if (start < startOffset) continue;  // overlapped by a previous rstrip
    const AddedToken& tok = added_[m.token];
    if (tok.singleWord) {
      bool startSpace = start == 0;
      if (!startSpace) {
        size_t st;
        startSpace = !isWordChar(utf8::prev(s, start, st));
      }
      bool stopSpace = stop == s.size();
      if (!stopSpace) {
        size_t i = stop;
        stopSpace = !isWordChar(utf8::next(s, i));
      }
      if (!startSpace || !stopSpace) continue;
    }
    if (tok.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t st;
        char32_t c = utf8::prev(s, ns, st);
        if (!uni::isWhitespace(c)) break;
        ns = st;
      }
      start = std::max(ns, startOffset);
    }
    if (tok.rstrip) {
      size_t i = stop;
      while (i < s.size()) {
        size_t j = i;
        char32_t c = utf8::next(s, j);
        if (!uni::isWhitespace(c)) break;
        i = j;
      }
      stop = i;
    }
    if (startOffset < start) segs.push_back({startOffset, start, -1});
    segs.push_back({start, stop, m.token});
    startOffset = stop;
  }
  if (startOffset < s.size()) segs.push_back({startOffset, s.size(), -1});
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool addSpecialTokens) const {
  std::string clean;
  if (!rawInvalidUtf8_ && !utf8::isValid(text)) {
    utf8::sanitize(text, clean);
    text = clean;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<AddedTokenMatcher::Match> matches;
  rawMatcher_.findAll(text, matches);
  std::vector<Segment> segs;
  splitOnAdded(text, matches, segs);
  for (const auto& sg : segs) {
    if (sg.token >= 0) {
      ids.push_back(added_[sg.token].id);
    } else if (sg.b > sg.a) {
      encodeSection(text.substr(sg.a, sg.b - sg.a), sg.a == 0, ids);
    }
  }
  if (postProcessor_) postProcessor_->apply(ids, addSpecialTokens);
  return ids;
}

std::vector<std::string> HfTokenizer::tokens(const std::vector<int32_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(idToToken(id));
  return out;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skipSpecialTokens) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = addedById_.find(id);
    if (it != addedById_.end()) {
      if (skipSpecialTokens && added_[it->second].special) continue;
      toks.push_back(added_[it->second].content);
      continue;
    }
    if (skipSpecialTokens && specialIds_.count(id)) continue;
    if (const std::string* t = model_->idToToken(id)) toks.push_back(*t);
  }
  if (!decoder_) {
    std::string s;
    for (size_t i = 0; i < toks.size(); ++i) {
      if (i) s += ' ';
      s += toks[i];
    }
    return s;
  }
  decoder_->apply(toks);
  std::string s;
  for (const auto& t : toks) s += t;
  return s;
}

std::string HfTokenizer::idToToken(int32_t id) const {
  auto it = addedById_.find(id);
  if (it != addedById_.end()) return added_[it->second].content;
  const std::string* t = model_->idToToken(id);
  return t ? *t : std::string();
}

std::optional<int32_t> HfTokenizer::tokenToId(std::string_view token) const {
  auto it = addedByContent_.find(std::string(token));
  if (it != addedByContent_.end()) return added_[it->second].id;
  return model_->tokenToId(token);
}

bool HfTokenizer::isSpecial(int32_t id) const {
  auto it = addedById_.find(id);
  return (it != addedById_.end() && added_[it->second].special) || specialIds_.count(id) > 0;
}

std::string HfTokenizer::kind() const {
  std::string k = model_->kind();
  if (isByteLevel()) k += " (byte-level)";
  if (!kindNote_.empty()) k += " (" + kindNote_ + ")";
  return k + ", " + std::to_string(vocabSize_) + " tokens";
}

bool HfTokenizer::isByteLevel() const {
  // A byte-level vocabulary maps every byte to a token of its own char.
  if (model_->kind() != "BPE") return false;
  for (int b = 0; b < 256; ++b)
    if (!model_->tokenToId(hf::byteToUnicode(static_cast<uint8_t>(b)))) return false;
  return true;
}

// ---------------------------------------------------------------------------

std::unique_ptr<Tokenizer> Tokenizer::fromFile(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw IoError(path.string() + ": no such file");
  if (std::filesystem::is_directory(path)) return fromModelDir(path);
  std::string ext = path.extension().string();
  if (ext == ".model") return loadSentencePieceModel(path);
  std::string text = readFile(path);
  if (text.size() >= 2 && static_cast<unsigned char>(text[0]) == 0x1F && static_cast<unsigned char>(text[1]) == 0x8B)
    throw FormatError(path.string() + ": gzip-compressed; gunzip it first");
  size_t firstNonWs = text.find_first_not_of(" \t\r\n");
  if (firstNonWs == std::string::npos || text[firstNonWs] != '{') {
    // Not JSON: maybe a SentencePiece protobuf with another extension.
    if (ext != ".json") return loadSentencePieceModel(path);
    throw FormatError(path.string() + ": not a tokenizer.json (does not start with '{')");
  }
  auto t = HfTokenizer::fromJson(text, path.string());
  t->applyTokenConfig(path.parent_path() / "tokenizer_config.json");
  return t;
}

std::unique_ptr<Tokenizer> Tokenizer::fromModelDir(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "tokenizer.json")) return fromFile(dir / "tokenizer.json");
  if (std::filesystem::exists(dir / "tokenizer.model")) return fromFile(dir / "tokenizer.model");
  throw FormatError(dir.string() + ": no tokenizer.json or tokenizer.model in the model folder");
}

}  // namespace moefy
