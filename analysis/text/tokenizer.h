#pragma once
// Tokenizers with exact Hugging Face parity. A Tokenizer is immutable after
// loading; encode/decode are const and thread-safe.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moefy {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Loads tokenizer.json (HF tokenizers format) or a SentencePiece .model
  /// file. Throws FormatError naming the file and the offending component.
  static std::unique_ptr<Tokenizer> fromFile(const std::filesystem::path& path);
  /// Finds the tokenizer of a model folder (tokenizer.json, else
  /// tokenizer.model). Throws FormatError if the folder has none.
  static std::unique_ptr<Tokenizer> fromModelDir(const std::filesystem::path& dir);

  /// Token ids of `text` (UTF-8). With addSpecialTokens the post-processor
  /// template (BOS/EOS, [CLS]/[SEP]) is applied, as HF's encode() does.
  /// Invalid UTF-8 is replaced by U+FFFD before encoding (documented in docs/).
  virtual std::vector<int32_t> encode(std::string_view text, bool addSpecialTokens = true) const = 0;
  /// Text of `ids`, as HF's decode() with skip_special_tokens.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skipSpecialTokens = true) const = 0;
  /// The vocabulary string of one id ("" if out of range).
  virtual std::string idToToken(int32_t id) const = 0;
  virtual std::optional<int32_t> tokenToId(std::string_view token) const = 0;
  virtual int32_t vocabSize() const = 0;

  /// Special ids if the tokenizer defines them.
  virtual std::optional<int32_t> bosId() const = 0;
  virtual std::optional<int32_t> eosId() const = 0;
  virtual std::optional<int32_t> padId() const = 0;

  /// A short description, e.g. "BPE (byte-level), 128256 tokens".
  virtual std::string kind() const = 0;
};

}  // namespace moefy
