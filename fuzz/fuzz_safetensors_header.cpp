// libFuzzer target for the safetensors header parser: any byte string is
// either accepted (and then the tensors cover the data region exactly, each
// sized by shape x dtype, with unique names) or refused with a FormatError
// naming the file. Nothing else may escape, crash, hang or leak.
//
//   build-fuzz/fuzz/fuzz_safetensors_header -max_total_time=60 fuzz/corpus/safetensors_header
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "analysis/io/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<moefy::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t dataStart = 0;
  bool accepted = false;
  fuzzutil::expectCleanRefusal("fuzz.safetensors", [&] {
    moefy::parseSafetensorsHeader(data, size, "fuzz.safetensors", tensors, metadata, dataStart);
    accepted = true;
  });
  if (!accepted) return 0;
  // Accepted: check the invariants the reader relies on.
  if (dataStart < 8 || dataStart > size) std::abort();
  const uint64_t dataSize = size - dataStart;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) std::abort();
    if (t.begin > t.end || t.end > dataSize) std::abort();
    if (static_cast<uint64_t>(t.numel()) * moefy::dtypeSize(t.dtype) != t.end - t.begin) std::abort();
    ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [b, e] : ranges) {
    if (b != covered) std::abort();
    covered = e;
  }
  if (covered != dataSize) std::abort();
  return 0;
}
