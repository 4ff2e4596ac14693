#pragma once
// Byte-level BPE training (GPT-2 style) and the tokenizer.json it produces.
//
// Pre-tokenisation is GPT-2's: the text is split with the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (Oniguruma), each piece is taken as bytes, and merges never cross pieces.
// The vocabulary is: the special tokens first (GPT-2 style: id 0 =
// <|endoftext|>, used as BOS, EOS and padding; T5 style: 0 = <pad>, 1 = </s>,
// 2 = <unk>, the ids of T5's SentencePiece vocabularies, so pad_token_id 0,
// eos_token_id 1 and decoder_start_token_id 0 of a T5 config hold), then the
// 256 bytes (in byte order, written with GPT-2's bytes-to-unicode mapping),
// then one token per merge in merge order.
// Ties between equally frequent pairs go to the pair of smaller ids, so the
// result is deterministic.
//
// The written tokenizer.json is a standard Hugging Face one: ByteLevel
// pre-tokenizer (add_prefix_space false, use_regex true), BPE model with vocab
// and merges, ByteLevel decoder, the special tokens as added tokens, and a
// TemplateProcessing post-processor: GPT-2 style puts <|endoftext|> before
// every sequence ("<|endoftext|> $A", so encode(text) starts with BOS); T5
// style puts </s> after it ("$A </s>", T5TokenizerFast's template, so
// encode(text) ends with EOS and has no BOS).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moefy {

class JobContext;

/// GPT-2 regex pre-tokenisation of UTF-8 text (invalid UTF-8 is replaced by
/// U+FFFD first). Pieces are byte strings that concatenate to the text.
std::vector<std::string> gpt2PreTokenize(std::string_view text);
/// GPT-2's bytes_to_unicode: the UTF-8 string of the printable character that
/// stands for byte b in vocab and merges.
const std::string& byteLevelChar(uint8_t b);
/// Byte string -> its byte-level (vocab) spelling.
std::string byteLevelEncode(std::string_view bytes);

/// The special tokens and post-processor template of a trained tokenizer.
enum class BpeStyle {
  Gpt2,  ///< id 0 <|endoftext|> (BOS, EOS, padding); template "<|endoftext|> $A"
  T5,    ///< ids 0 <pad>, 1 </s>, 2 <unk>; template "$A </s>" (for encoder-decoder models)
};

struct BpeTrainOptions {
  int vocabSize = 8192;       ///< including the special tokens and the 256 bytes
  int64_t minFrequency = 2;   ///< stop when the best pair occurs less often
  BpeStyle style = BpeStyle::Gpt2;
};

struct BpeModel {
  BpeStyle style = BpeStyle::Gpt2;
  std::vector<std::string> specials = {"<|endoftext|>"};  ///< ids 0 .. n-1
  std::vector<std::string> tokens;                  ///< id -> raw bytes (ids < specials.size(): the special token text)
  std::vector<std::pair<int32_t, int32_t>> merges;  ///< rank -> (left id, right id)
  /// The special tokens of a style, in id order.
  static std::vector<std::string> specialsOf(BpeStyle style);
  /// The tokenizer.json document.
  std::string toTokenizerJson() const;
  /// Reads back a tokenizer.json written by toTokenizerJson() (either style;
  /// the style is recognised from the added tokens). Throws FormatError.
  static BpeModel fromTokenizerJson(const std::filesystem::path& path);
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainOptions options = {});
  /// Pre-tokenises and counts one document. Special-token text inside it is
  /// counted as plain text (it is never merged with neighbours by HF either
  /// way, since encode splits it out before the model runs).
  void addText(std::string_view text);
  int64_t distinctWords() const { return static_cast<int64_t>(wordCounts_.size()); }
  int64_t totalWords() const { return totalWords_; }
  /// Learns merges until vocabSize is reached or pairs get rarer than
  /// minFrequency. Reports progress and polls cancel on `job`.
  BpeModel train(JobContext& job) const;

 private:
  BpeTrainOptions options_;
  std::unordered_map<std::string, int64_t> wordCounts_;
  int64_t totalWords_ = 0;
};

/// Byte-level BPE encoding with a BpeModel (HF semantics: special-token text is
/// split out first, then each pre-token is merged lowest rank first). Used by
/// the trainer's tests as a second implementation next to Tokenizer.
class BpeEncoder {
 public:
  explicit BpeEncoder(BpeModel model);
  /// With addSpecial the post-processor's token is added: GPT-2 style
  /// prepends <|endoftext|> (0), T5 style appends </s> (1).
  std::vector<int32_t> encode(std::string_view text, bool addSpecial = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  const BpeModel& model() const { return model_; }

 private:
  void encodeWord(const std::string& word, std::vector<int32_t>& out) const;
  BpeModel model_;
  std::vector<int32_t> byteId_;  // byte -> token id
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;  // pair -> (rank, new id)
};

/// Documents of a corpus path for the trainers: a directory gives every *.txt
/// file below it (sorted by path; one file = one document), a file gives one
/// document. Throws IoError/FormatError naming the path.
std::vector<std::filesystem::path> corpusTextFiles(const std::filesystem::path& path);

}  // namespace moefy
