// Fuzz target for the metadata of every artefact kind: the first byte picks
// the kind, the rest is written as its JSON file into a scratch artefact
// folder, and the core's reader opens the folder:
//   0 recording  manifest.json   Recording::open
//   1 partition  partition.json  Partition::open
//   2 router     router.json     RouterSet::read
//   3 evaluation eval.json       readEvalFile
// The folders hold no tensor files, so an accepted metadata file ends in a
// clean "missing file" refusal; what is fuzzed is every check before it.
// These readers need libtorch, so this target has only the regression /
// mutation driver (fuzz/regress_main.cpp), not a libFuzzer build.
#include <cstdint>
#include <cstdlib>
#include <filesystem>

#include "analysis/eval/eval_file.h"
#include "analysis/record/recording.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const char* files[] = {"manifest.json", "partition.json", "router.json", "eval.json"};
  const int kind = data[0] % 4;
  const auto dir = fuzzutil::scratchFile("artefact");
  std::filesystem::remove_all(dir);
  fuzzutil::writeScratch(dir / files[kind], data + 1, size - 1);
  fuzzutil::expectCleanRefusal(dir.string(), [&] {
    switch (kind) {
      case 0:
        (void)moefy::Recording::open(dir);
        break;
      case 1:
        (void)moefy::Partition::open(dir);
        break;
      case 2:
        (void)moefy::RouterSet::read(dir);
        break;
      default:
        (void)moefy::readEvalFile(dir / "eval.json");
        break;
    }
  });
  return 0;
}
