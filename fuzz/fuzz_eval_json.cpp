// libFuzzer target for eval.json (parseJson + validateEvalDocument): an
// accepted document holds only values an evaluation can produce.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "analysis/eval/eval_file.h"
#include "analysis/io/json_input.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzutil::expectCleanRefusal("eval.json", [&] {
    const auto j = moefy::parseJson(std::string_view(reinterpret_cast<const char*>(data), size), "eval.json");
    moefy::validateEvalDocument(j, "eval.json");
    for (const auto& r : j.value("results", nlohmann::json::array())) {
      if (r.contains("perplexity") && r["perplexity"].is_number() && !(r["perplexity"].get<double>() >= 1))
        std::abort();
      if (r.contains("speed") && r["speed"].is_object())
        for (const char* k : {"forward_speedup", "generate_speedup"})
          if (r["speed"].contains(k) && r["speed"][k].is_number() && !(r["speed"][k].get<double>() > 0)) std::abort();
    }
  });
  return 0;
}
