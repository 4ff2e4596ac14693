#pragma once
// The pipeline steps the GUI can run (record, split, route, eval, export,
// calibrate: whichever the core in this build has). Each step's option fields
// are generated from the core's OptionTable of the same CLI command (name,
// type, range, default, help), and its values are parsed by that table, so the
// dialog and the CLI accept the same values with the same defaults. The job
// calls the same core function as the CLI on a JobRunner thread, writing into
// the workspace's folder for that kind.
#include <QString>
#include <QStringList>
#include <QVariant>
#include <QVariantMap>
#include <functional>
#include <vector>

#include "analysis/common/options.h"
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
  /// The field is the CLI option `option` of the step's OptionTable (false:
  /// a studio-only field: the output name, an artefact picker, ...).
  bool cliOption = false;
};

struct PipelineStep {
  QString id;        ///< "record", "split", ...
  QString title;     ///< menu text
  QString shortcut;  ///< e.g. "Ctrl+R"
  QString help;      ///< tooltip: what it does and which CLI command it mirrors
  std::vector<StepField> fields;
  /// The CLI command's option table (the same command as `id`).
  const OptionTable* options = nullptr;
  /// Builds the job from field values (missing ones take their defaults).
  std::function<bool(StudioContext*, const QVariantMap&, PipelineJob*, QString*)> make;
  /// Defaults that depend on the open workspace, over the fields' own: the
  /// corpus and split of record (the training corpus; its training split
  /// when evaluations read its held-out split) and eval (the evaluation
  /// corpus, read whole when it is a corpus of its own, else the training
  /// corpus's held-out split). Null: none. Called with a workspace open.
  std::function<QVariantMap(StudioContext*)> workspaceDefaults;
};

/// The steps available in this build.
const std::vector<PipelineStep>& pipelineSteps();
const PipelineStep* findStep(const QString& id);
/// The dialog field of option `name` of `table`: kind, range, default (or the
/// table's suggestion when the option has no default), choices and help.
/// Throws std::logic_error if the table has no such option.
StepField optionField(const OptionTable& table, const QString& name);
/// Parses the values of the step's option fields with its OptionTable, as the
/// CLI would parse them (a value equal to the default counts as not given).
/// Throws ParameterError naming the option.
OptionValues parseStepOptions(const PipelineStep& step, const QVariantMap& values);
/// Fills missing values with the fields' defaults (artefacts: the current
/// one; with a workspace open, the step's workspaceDefaults first).
QVariantMap withDefaults(const PipelineStep& step, StudioContext* ctx, QVariantMap values);
/// The value a step's dialog starts with for `field`: the step's workspace
/// default when it has one, else the field's default.
QVariant fieldDefault(const PipelineStep& step, const StepField& field, StudioContext* ctx);
/// Builds a step's job without a dialog (tests, scripting). False with *error set.
bool makeStepJob(const QString& id, StudioContext* ctx, const QVariantMap& values, PipelineJob* job, QString* error);
/// Shows the step's dialog; on OK fills *job. False if cancelled or invalid (*error set when invalid).
bool runStepDialog(const PipelineStep& step, QWidget* parent, StudioContext* ctx, PipelineJob* job, QString* error);

}  // namespace moefy::views
