// SentencePiece .model files: parsed from the protobuf wire format (no
// libsentencepiece: it cannot be linked next to libtorch's libprotobuf).
#include "analysis/common/error.h"
#include "analysis/text/hf_tokenizer.h"

namespace moefy {

std::unique_ptr<Tokenizer> loadSentencePieceModel(const std::filesystem::path& path) {
  throw FormatError(path.string() + ": SentencePiece .model files are not supported by this build yet; use tokenizer.json");
}

}  // namespace moefy
