#pragma once
// The Start page: the open workspace's pipeline state at a glance. One row
// per pipeline stage (model, corpus, recording, partition, router,
// evaluation, export; front and analysis when the workspace has them) with
// the artefacts the core's Project scan found (StudioContext::artefacts():
// count and the newest one's summary line; no artefact file is read here),
// the GUI action and the equivalent `moefy` command line of the stage, a
// "Copy CLI command" button per row, a next-step hint for the first missing
// stage, a "Copy Python" button per row (a snippet that loads the newest
// artefact: analysis/project/python_snippet.h), and a link to `moefy demo`'s
// report when the workspace holds one.
#include <QString>
#include <QWidget>
#include <functional>
#include <vector>

#include "views/context.h"

class QLabel;
class QPushButton;
class QTableWidget;

namespace moefy::views {

/// One pipeline stage of a workspace as the Start page shows it.
struct PipelineStage {
  QString id;  ///< "model", "corpus", "recording", "partition", "router", "evaluation", "export", "front", "analysis"
  QString title;  ///< "Model", "Recordings", ...
  /// Artefacts of the kind the Project scan found (model/corpus: 1 when the
  /// workspace's folder/file exists, else 0).
  int count = 0;
  int unreadable = 0;  ///< of `count`, those whose reader failed (ArtefactRef::readable false)
  /// The stage is done: model/corpus exist, or at least one readable artefact.
  bool present = false;
  /// The newest artefact (latest folder modification time; on a tie the last
  /// by name), readable ones first; the model/corpus path; "" when none.
  QString newest;
  QString summary;  ///< the newest artefact's summary line from the scan (model/corpus: "")
  /// The Pipeline menu entry that makes the stage ("Pipeline > Record
  /// activations... (Ctrl+Shift+R)"), "File > Workspace settings..." for the
  /// model and corpus, "" when this build's GUI has no step for it.
  QString action;
  /// The equivalent CLI command line, filled in with the workspace's model and
  /// corpus, the newest upstream artefacts (placeholders such as REC_DIR where
  /// an upstream stage has none) and a fresh output folder in the kind's
  /// workspace folder (WS/recordings/rec1, ...). Paths are absolute and
  /// shell-quoted when needed.
  QString command;
  /// A self-contained Python snippet that loads `newest` (json + numpy,
  /// moefy::pythonSnippet of analysis/project/python_snippet.h: the real file
  /// and tensor names of docs/formats.md, the absolute path filled in); ""
  /// when the stage has no artefact (model/corpus: when it does not exist).
  QString python;
};

/// The stages of `ws` in pipeline order from its scanned `artefacts`
/// (StudioContext::artefacts()); front and analysis only when present. Reads
/// no artefact file: only the scan's fields, file existence and folder
/// modification times, and `routerPartition(dir)` (the partition folder a
/// router was trained for, "" if unknown; the caller's reader, e.g. the
/// context's router cache) for the newest router, so that eval and export
/// pair it with its own partition. Without it they take the newest
/// partition. Thread-safety: that of `routerPartition` (the rest is a pure
/// function of its inputs and the file system).
std::vector<PipelineStage> pipelineStages(const Workspace& ws, const std::vector<ArtefactRef>& artefacts,
                                          const std::function<QString(const QString&)>& routerPartition = {});
/// Index into `stages` of the first stage that is not present; -1 when all are.
int firstMissingStage(const std::vector<PipelineStage>& stages);
/// The report `moefy demo` wrote next to the workspace's artefacts:
/// report.html (else report.md) in the workspace folder or in the parent of
/// any of its artefact folders (a workspace over a demo output points its
/// folders into DIR/recording, DIR/partitions, ...). "" when there is none.
QString demoReportPath(const Workspace& ws);
/// `s` quoted for a POSIX shell when it holds anything but [A-Za-z0-9_./:=+,@%-].
QString shellQuote(const QString& s);

/// The Start tab (first in the tab order). Refreshes when the workspace or
/// its artefacts change (StudioContext::workspaceChanged/artefactsChanged)
/// and when shown.
class StartView : public QWidget {
  Q_OBJECT
 public:
  explicit StartView(StudioContext* ctx, QWidget* parent = nullptr);
  /// Rebuilds the rows from the context's workspace and scan.
  void refresh();
  /// The rows shown (empty without a workspace).
  const std::vector<PipelineStage>& stages() const { return stages_; }
  /// Row of the first missing stage (-1: none, or no workspace).
  int firstMissing() const { return firstMissing_; }
  QTableWidget* table() const { return table_; }
  /// The "Copy CLI command" button of row `row` (nullptr when out of range).
  QPushButton* copyButton(int row) const;
  /// The "Copy Python" button of row `row` (nullptr when out of range);
  /// disabled when the stage has no artefact to load.
  QPushButton* pythonButton(int row) const;
  /// The next-step hint (empty text when every stage is present).
  QLabel* nextStepLabel() const { return next_; }
  /// The demo report the link opens ("" and the link hidden when none).
  QString reportPath() const { return report_; }
  QLabel* reportLabel() const { return reportLabel_; }

 protected:
  void showEvent(QShowEvent* ev) override;

 private:
  StudioContext* ctx_;
  QLabel* title_;
  QLabel* next_;
  QLabel* reportLabel_;
  QTableWidget* table_;
  std::vector<PipelineStage> stages_;
  int firstMissing_ = -1;
  QString report_;
};

}  // namespace moefy::views
