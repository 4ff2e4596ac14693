#pragma once
// The pipeline steps the GUI can run (record, split, route, eval, export,
// calibrate). Each step has a dialog whose fields mirror its CLI options and a
// job that calls the same core function as the CLI, on a JobRunner thread.
#include <QString>
#include <functional>
#include <vector>

#include "views/context.h"
#include "views/jobrunner.h"

class QWidget;

namespace moefy::views {

struct PipelineStep {
  QString id;        ///< "record", "split", ...
  QString title;     ///< menu text
  QString shortcut;  ///< e.g. "Ctrl+R"
  QString help;      ///< tooltip: what it does and which CLI command it mirrors
};

struct PipelineJob {
  QString name;
  JobRunner::Fn fn;
  QString output;  ///< the artefact folder the job writes
};

/// The steps available in this build.
const std::vector<PipelineStep>& pipelineSteps();
/// Shows the step's dialog; on OK fills *job. False if cancelled or invalid (*error set when invalid).
bool runStepDialog(const PipelineStep& step, QWidget* parent, StudioContext* ctx, PipelineJob* job, QString* error);

}  // namespace moefy::views
