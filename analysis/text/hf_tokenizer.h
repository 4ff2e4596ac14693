#pragma once
// Internal: the tokenizer.json implementation of moefy::Tokenizer.
#include <array>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "analysis/text/hf_components.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool singleWord = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

/// Leftmost-longest matching of added tokens (the Rust crate uses
/// aho-corasick with MatchKind::LeftmostLongest).
class AddedTokenMatcher {
 public:
  struct Match {
    size_t start, end;
    int32_t token;  ///< index into the tokenizer's added tokens
  };
  void add(const std::string& content, int32_t tokenIndex);
  void findAll(std::string_view s, std::vector<Match>& out) const;

 private:
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> node
  std::vector<int32_t> terminal_{-1};            // node -> token index or -1
  std::array<bool, 256> first_{};
  bool empty_ = true;
};

class HfTokenizer : public Tokenizer {
 public:
  HfTokenizer();
  ~HfTokenizer() override;
  /// Parses tokenizer.json text; `where` names the file in errors.
  static std::unique_ptr<HfTokenizer> fromJson(const std::string& text, const std::string& where);
  /// Reads bos/eos/pad from a tokenizer_config.json if it exists. When its
  /// tokenizer_class is LlamaTokenizer, GemmaTokenizer or CodeLlamaTokenizer
  /// (with or without "Fast"), the post-processor is rebuilt from add_bos_token
  /// (default true) and add_eos_token (default false) as transformers'
  /// LlamaTokenizerFast.update_post_processor does at load: [bos] $A [eos]
  /// (Phi-3's tokenizer.json adds <s> but its tokenizer_config.json says
  /// add_bos_token false). Throws FormatError naming the file when the config is
  /// not JSON, or asks for a bos/eos that is not a token. Not thread-safe (call
  /// before sharing the tokenizer).
  void applyTokenConfig(const std::filesystem::path& configPath);

  std::vector<int32_t> encode(std::string_view text, bool addSpecialTokens = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skipSpecialTokens = true) const override;
  std::string idToToken(int32_t id) const override;
  std::optional<int32_t> tokenToId(std::string_view token) const override;
  int32_t vocabSize() const override { return vocabSize_; }
  std::optional<int32_t> bosId() const override { return bos_; }
  std::optional<int32_t> eosId() const override { return eos_; }
  std::optional<int32_t> padId() const override { return pad_; }
  std::string kind() const override;

  std::vector<std::string> tokens(const std::vector<int32_t>& ids) const;
  bool isSpecial(int32_t id) const;
  bool isByteLevel() const;

  // Assembly (used by fromJson and the SentencePiece loader).
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> preTokenizer_;
  std::unique_ptr<hf::Model> model_;
  std::unique_ptr<hf::PostProcessor> postProcessor_;
  std::unique_ptr<hf::Decoder> decoder_;
  std::string where_;
  std::string kindNote_;
  bool rawInvalidUtf8_ = false;  ///< the normalizer repairs invalid UTF-8 itself (SentencePiece)
  void addToken(AddedToken tok);
  /// Marks a model id as special (skipped by decode(skipSpecialTokens)) without matching it in text.
  void addSpecialId(int32_t id) { specialIds_.insert(id); }
  void finish();
  std::optional<int32_t> bos_, eos_, pad_;

 private:
  struct Segment {
    size_t a, b;
    int32_t token;  // added token index or -1 for text
  };
  void encodeSection(std::string_view text, bool atStart, std::vector<int32_t>& out) const;
  void splitOnAdded(std::string_view s, const std::vector<AddedTokenMatcher::Match>& matches, std::vector<Segment>& segs) const;

  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, int32_t> addedById_;
  std::unordered_map<std::string, int32_t> addedByContent_;
  AddedTokenMatcher rawMatcher_, normalizedMatcher_;
  std::unordered_set<int32_t> specialIds_;
  int32_t vocabSize_ = 0;
};

/// Loads a SentencePiece ModelProto (.model) file (sentencepiece_model.cpp).
std::unique_ptr<Tokenizer> loadSentencePieceModel(const std::filesystem::path& path);

}  // namespace moefy
