#pragma once
// Internal: the components of a Hugging Face tokenizer.json pipeline
// (normalizer -> pre-tokenizer -> model -> post-processor, and the decoder).
// Semantics follow the Rust `tokenizers` crate; see docs/tokenizers.md.
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moefy::hf {

/// One pre-token. `atStart` is true when it begins at offset 0 of the input
/// (Metaspace's prepend_scheme "first" needs it).
struct Piece {
  std::string text;
  bool atStart = false;
};
using Pieces = std::vector<Piece>;

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces `pieces` by their sub-pieces (never empty strings).
  virtual void apply(Pieces& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  /// Appends the ids of one pre-token.
  virtual void tokenize(std::string_view piece, std::vector<int32_t>& out) const = 0;
  virtual std::optional<int32_t> tokenToId(std::string_view token) const = 0;
  /// nullptr if out of range.
  virtual const std::string* idToToken(int32_t id) const = 0;
  /// One past the largest token id (not the number of entries: ids may have gaps).
  virtual int32_t size() const = 0;
  virtual std::string kind() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids, bool addSpecialTokens) const = 0;
  /// Ids the processor adds before / after a single sequence.
  virtual std::vector<int32_t> prefixIds() const { return {}; }
  virtual std::vector<int32_t> suffixIds() const { return {}; }
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

/// Factories from the JSON of one component; `where` names the file for errors.
std::unique_ptr<Normalizer> makeNormalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> makePreTokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Model> makeModel(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> makePostProcessor(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Decoder> makeDecoder(const nlohmann::json& j, const std::string& where);

/// A boolean flag of tokenizer_config.json (add_bos_token, add_eos_token, ...):
/// `def` when `key` is absent or null, else the value. Both the tokenizer.json
/// path and the SentencePiece .model path read their flags through this, so a
/// non-boolean value is refused the same way. Throws FormatError naming
/// `where` and `key` when the value is not true/false. Thread-safe.
bool configFlag(const nlohmann::json& config, const char* key, bool def, const std::string& where);

/// The byte of a byte-fallback piece "<0xHH>" (two hex digits, either case),
/// or -1 for any other piece (e.g. "<0xZZ>", which is then plain text).
/// Semantics of HF tokenizers' ByteFallback decoder. Thread-safe.
int bytePieceValue(const std::string& piece);

/// GPT-2's byte <-> unicode-char table (bytes_to_unicode).
const std::string& byteToUnicode(uint8_t b);
/// -1 if `cp` is not in the table.
int unicodeToByte(char32_t cp);

/// Models built directly (SentencePiece .model files reuse them).
struct UnigramPiece {
  std::string piece;
  double score = 0;
};
std::unique_ptr<Model> makeUnigram(std::vector<UnigramPiece> vocab, std::optional<int32_t> unkId, bool byteFallback,
                                   const std::string& where);
std::unique_ptr<Model> makeBpe(std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                               std::optional<std::string> unk, bool byteFallback, bool fuseUnk, const std::string& where);

}  // namespace moefy::hf
