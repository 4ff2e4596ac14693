// libFuzzer target for the safetensors header parser: any byte string is
// either accepted (and then every tensor lies inside the data region, sized
// by shape x dtype, without overlaps) or rejected with a FormatError naming
// the file. Nothing else may escape, crash, hang or leak.
//
//   build/fuzz/fuzz_safetensors_header -max_total_time=120 build-fuzz/fuzz/corpus_safetensors_header
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<moefy::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t dataStart = 0;
  try {
    moefy::parseSafetensorsHeader(data, size, "fuzz.safetensors", tensors, metadata, dataStart);
  } catch (const moefy::FormatError& e) {
    // Every message names the file.
    if (std::string(e.what()).rfind("fuzz.safetensors", 0) != 0) std::abort();
    return 0;
  }
  // Accepted: check the invariants the reader relies on.
  if (dataStart < 8 || dataStart > size) std::abort();
  const uint64_t dataSize = size - dataStart;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& t : tensors) {
    if (t.begin > t.end || t.end > dataSize) std::abort();
    if (static_cast<uint64_t>(t.numel()) * moefy::dtypeSize(t.dtype) != t.end - t.begin) std::abort();
    if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) std::abort();
  return 0;
}
