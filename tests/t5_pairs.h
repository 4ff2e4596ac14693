#pragma once
// Teacher-forced source/decoder pairs for the T5 tests (tests/e2e/test_t5_pipeline,
// tests/gui/test_site_picker): three pairs of different lengths, so padded
// batches occur and the stacks' token counts differ (per repeat: encoder
// 7 + 3 + 5 = 15 tokens, decoder 5 + 2 + 4 = 11). Header-only.
#include <cstdint>
#include <functional>
#include <vector>

#include "analysis/record/recorder.h"

namespace moefy::test {

inline const std::vector<std::vector<int32_t>> kT5Src = {{5, 6, 7, 8, 9, 10, 1}, {11, 12, 1}, {13, 14, 15, 16, 1}};
/// Decoder inputs, each starting with decoder_start_token_id 0.
inline const std::vector<std::vector<int32_t>> kT5Dec = {{0, 21, 22, 23, 24}, {0, 25}, {0, 26, 27, 28}};

/// The pairs `repeat` times over, with consecutive document ids.
inline PairSource t5Pairs(int repeat) {
  return [repeat](const std::function<bool(const SequencePair&)>& fn) {
    int64_t id = 0;
    for (int r = 0; r < repeat; ++r)
      for (size_t i = 0; i < kT5Src.size(); ++i) {
        SequencePair p;
        p.source.ids = kT5Src[i];
        p.source.docId = id++;
        p.decoder = kT5Dec[i];
        if (!fn(p)) return;
      }
  };
}

}  // namespace moefy::test
