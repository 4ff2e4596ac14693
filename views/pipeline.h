#pragma once
// The pipeline steps the GUI can run (record, split, route, eval, export,
// calibrate: whichever the core in this build has). Each step lists its
// fields, which mirror the CLI's options (same names and defaults); the dialog
// is generated from them, and the job calls the same core function as the CLI
// on a JobRunner thread, writing into the workspace's folder for that kind.
#include <QString>
#include <QStringList>
#include <QVariant>
#include <QVariantMap>
#include <functional>
#include <vector>

#include "views/context.h"
#include "views/jobrunner.h"

class QWidget;

namespace moefy::views {

struct PipelineJob {
  QString name;
  JobRunner::Fn fn;
  QString output;  ///< the artefact folder the job writes
};

struct StepField {
  enum Kind { Int, Double, Text, Bool, Choice, Artefact };
  QString option;   ///< the CLI option ("seq-len"), or "out" for the output folder name
  QString label;
  Kind kind = Text;
  QVariant def;
  QStringList choices;   ///< Choice
  QString artefactKind;  ///< Artefact: "recording", "partition", ...
  QString help;
  double min = 0, max = 1e9;
};

struct PipelineStep {
  QString id;        ///< "record", "split", ...
  QString title;     ///< menu text
  QString shortcut;  ///< e.g. "Ctrl+R"
  QString help;      ///< tooltip: what it does and which CLI command it mirrors
  std::vector<StepField> fields;
  /// Builds the job from field values (missing ones take their defaults).
  std::function<bool(StudioContext*, const QVariantMap&, PipelineJob*, QString*)> make;
};

/// The steps available in this build.
const std::vector<PipelineStep>& pipelineSteps();
const PipelineStep* findStep(const QString& id);
/// Fills missing values with the fields' defaults (artefacts: the current one).
QVariantMap withDefaults(const PipelineStep& step, StudioContext* ctx, QVariantMap values);
/// Builds a step's job without a dialog (tests, scripting). False with *error set.
bool makeStepJob(const QString& id, StudioContext* ctx, const QVariantMap& values, PipelineJob* job, QString* error);
/// Shows the step's dialog; on OK fills *job. False if cancelled or invalid (*error set when invalid).
bool runStepDialog(const PipelineStep& step, QWidget* parent, StudioContext* ctx, PipelineJob* job, QString* error);

}  // namespace moefy::views
