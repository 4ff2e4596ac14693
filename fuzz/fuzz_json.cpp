// libFuzzer target for parseJson, the one JSON parser every reader uses:
// any byte string is parsed or refused with a FormatError; an accepted
// document is at most kMaxJsonDepth deep and has no duplicate keys.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "analysis/io/json_input.h"
#include "fuzz/fuzz_util.h"

namespace {

int depthOf(const nlohmann::json& j) {
  int d = 0;
  if (j.is_structured())
    for (const auto& v : j) d = std::max(d, depthOf(v));
  return j.is_structured() ? d + 1 : 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  bool accepted = false;
  fuzzutil::expectCleanRefusal("fuzz.json", [&] {
    j = moefy::parseJson(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
    accepted = true;
  });
  if (!accepted) return 0;
  if (depthOf(j) > moefy::kMaxJsonDepth) std::abort();
  // The integer helper never narrows: a value it accepts round-trips.
  if (j.is_number()) {
    fuzzutil::expectCleanRefusal("v", [&] {
      const int v = moefy::jsonInt(j, -5, 1000, "v");
      if (v < -5 || v > 1000 || j.get<double>() != static_cast<double>(v)) std::abort();
    });
  }
  return 0;
}
