// libFuzzer target for config.json: the bytes are parsed with parseJson and
// read by ModelConfig::fromJson. Accepted configs satisfy the invariants the
// model code relies on (positive sizes, head_dim x heads consistent, GQA).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "analysis/io/json_input.h"
#include "analysis/model/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzutil::expectCleanRefusal("config.json", [&] {
    const auto j = moefy::parseJson(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    const moefy::ModelConfig c = moefy::ModelConfig::fromJson(j, "config.json");
    if (c.nLayer <= 0 || c.dModel <= 0 || c.nHead <= 0 || c.dFF <= 0 || c.vocab <= 0 || c.headDim <= 0) std::abort();
    if (c.nKVHead <= 0 || c.nHead % c.nKVHead != 0) std::abort();
  });
  return 0;
}
