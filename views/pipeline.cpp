#include "views/pipeline.h"

namespace moefy::views {

const std::vector<PipelineStep>& pipelineSteps() {
  static const std::vector<PipelineStep> steps;
  return steps;
}

bool runStepDialog(const PipelineStep& step, QWidget*, StudioContext*, PipelineJob*, QString* error) {
  if (error) *error = "pipeline step '" + step.id + "' is not available in this build";
  return false;
}

}  // namespace moefy::views
