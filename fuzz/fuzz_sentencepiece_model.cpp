// libFuzzer target for SentencePiece .model files (loadSentencePieceModel):
// the bytes are written to a scratch file and loaded; an accepted model must
// encode and decode a fixed text, with every id inside its vocabulary.
#include <cstdint>
#include <cstdlib>

#include "analysis/text/hf_tokenizer.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto path = fuzzutil::scratchFile("tokenizer.model");
  fuzzutil::writeScratch(path, data, size);
  fuzzutil::expectCleanRefusal(path.string(), [&] {
    auto t = moefy::loadSentencePieceModel(path);
    const auto ids = t->encode("Hello, world! caf\xc3\xa9 123  end", true);
    for (int32_t id : ids)
      if (id < 0 || id >= t->vocabSize()) std::abort();
    (void)t->decode(ids, false);
  });
  return 0;
}
