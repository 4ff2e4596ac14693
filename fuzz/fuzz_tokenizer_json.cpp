// libFuzzer target for tokenizer.json (HfTokenizer::fromJson): the bytes are
// loaded; an accepted tokenizer must encode and decode a fixed text without
// crashing, and every id it produces lies inside its vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "analysis/text/hf_tokenizer.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzzutil::expectCleanRefusal("tokenizer.json", [&] {
    auto t = moefy::HfTokenizer::fromJson(text, "tokenizer.json");
    const auto ids = t->encode("Hello, world! <s> caf\xc3\xa9 123\n\tend", true);
    for (int32_t id : ids)
      if (id < 0 || id >= t->vocabSize()) std::abort();
    (void)t->decode(ids, false);
  });
  return 0;
}
