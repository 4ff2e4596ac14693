// libFuzzer target for .jsonl corpora (Corpus::open + every document): the
// bytes are written to a scratch .jsonl file and read with a label field.
// Every document read back by id equals the one streamed.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "analysis/text/corpus.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto path = fuzzutil::scratchFile("corpus.jsonl");
  fuzzutil::writeScratch(path, data, size);
  fuzzutil::expectCleanRefusal(path.string(), [&] {
    moefy::CorpusOptions o;
    o.labelField = size % 2 ? "label" : "";
    auto c = moefy::Corpus::open(path, o);
    std::vector<std::string> texts;
    c->forEachDocument([&](const moefy::Document& d) {
      texts.push_back(d.text);
      return true;
    });
    if (static_cast<int64_t>(texts.size()) != c->documentCount()) std::abort();
    for (int64_t i = 0; i < c->documentCount(); ++i)
      if (c->document(i).text != texts[static_cast<size_t>(i)]) std::abort();
  });
  return 0;
}
