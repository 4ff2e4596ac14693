// Placeholder until the HF tokenizer implementation lands (issue 3): model
// folders load without a tokenizer and say why.
#include "analysis/text/tokenizer.h"

#include "analysis/common/error.h"

namespace moefy {

std::unique_ptr<Tokenizer> Tokenizer::fromFile(const std::filesystem::path& path) {
  throw FormatError(path.string() + ": tokenizers are not supported by this build yet");
}

std::unique_ptr<Tokenizer> Tokenizer::fromModelDir(const std::filesystem::path& dir) {
  throw FormatError(dir.string() + ": tokenizers are not supported by this build yet");
}

}  // namespace moefy
