// moefy front: quality against FFN FLOPs for every compute-budget method at
// the same budgets (issue 17). The work is the core's writeFrontFolder
// (analysis/eval/front.h); this file parses, runs and prints.
#include <filesystem>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/eval/front.h"
#include "analysis/eval/front_options.h"
#include "analysis/jobs/job.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

int runFrontCmd(const Args& a) {
  // Every option is checked before anything is loaded or written.
  const FrontOptions o = frontOptionsFrom(a);
  const fs::path modelDir = a.pos(0, "MODEL_DIR"), train = a.pos(1, "TRAIN_CORPUS"),
                 heldout = a.pos(2, "HELDOUT_CORPUS");
  if (!a.has("out")) throw ParameterError("--out FRONT_DIR is required");
  const fs::path out = a.text("out");
  auto job = makeCliJob(a);
  const FrontResult front = writeFrontFolder(modelDir, train, heldout, o, out, a.flag("force"), *job);
  if (a.json()) {
    nlohmann::json j = front.document;
    j["out"] = out.string();
    printJson(j);
    return 0;
  }
  std::cout << frontTable(front) << "wrote " << (out / "front.json").string() << " and "
            << (out / "front_perplexity.svg").string() << ", " << (out / "front_top1.svg").string() << "\n";
  return 0;
}

CommandRegistrar frontCmd(frontOptionTable(), runFrontCmd);

}  // namespace

}  // namespace moefy::cli
