#pragma once
// StudioContext: what every view shares. The open workspace, a cache of loaded
// artefacts, the linked selection (neuron/expert), and the message sink that
// feeds the log and issues dock.
#include <QObject>
#include <QString>
#include <map>
#include <memory>
#include <optional>

#include "views/artefacts.h"

namespace moefy {
class Tokenizer;
}

namespace moefy::views {

class JobRunner;
class TaskRunner;

class StudioContext : public QObject {
  Q_OBJECT
 public:
  enum Level { Info, Warning, Error };
  explicit StudioContext(QObject* parent = nullptr);

  bool hasWorkspace() const { return ws_.has_value(); }
  const Workspace& workspace() const { return *ws_; }
  Workspace& workspace() { return *ws_; }
  /// Opens a workspace folder; reports errors and returns false (with the
  /// message, which names the file, in *error if given).
  bool openWorkspace(const QString& dir, QString* error = nullptr);
  void setWorkspace(const Workspace& ws);
  /// Rescans the artefact folders (after a job wrote one).
  void rescan();
  const std::vector<ArtefactRef>& artefacts() const { return artefacts_; }
  /// Paths of artefacts of one kind ("recording", "partition", ...).
  QStringList paths(const QString& kind) const;

  /// Cached loaders. Return nullptr (and report the error once) on failure.
  std::shared_ptr<Recording> recording(const QString& path);
  std::shared_ptr<Partition> partition(const QString& path);
  std::shared_ptr<Router> router(const QString& path);
  std::shared_ptr<Evaluation> evaluation(const QString& path);
  std::shared_ptr<Front> front(const QString& path);
  std::shared_ptr<Analysis> analysis(const QString& path);
  /// The reader's one-line error for the last failed load of `path` (names
  /// the file and key; "" when the last load succeeded or none was tried).
  QString loadError(const QString& path) const;
  /// The workspace model's tokenizer (loaded once; nullptr if it has none).
  std::shared_ptr<const Tokenizer> tokenizer();
  /// A readable form of a token id: its decoded text, else "#id".
  QString tokenText(int32_t id);

  /// The artefact most recently picked in the tree, per kind ("" if none).
  QString current(const QString& kind) const;
  void setCurrent(const QString& kind, const QString& path);

  /// The one selection every view follows: an FFN site (its layer), a
  /// neuron, the expert, and the partition and router they are read under.
  /// The partition and router are the current ones (current("partition"),
  /// current("router")): picking one in any view changes the selection for
  /// all. The expert is always the selected neuron's expert in that
  /// partition, so the inspector, the expert graph and the co-activation map
  /// agree on it.
  struct Selection {
    int layer = -1;   ///< the FFN site's index (analysis/model/site.h "Site indices": blk.L -> L; T5 dec.blk.L ->
                      ///< encoder layers + L; -1: none)
    int neuron = -1;  ///< -1: none
    int expert = -1;  ///< the neuron's expert in `partition`, or the picked expert (-1: none)
    QString partition, router;
  };
  Selection selection() const;
  int selectedLayer() const { return selLayer_; }
  int selectedNeuron() const { return selNeuron_; }
  int selectedExpert() const { return selExpert_; }
  /// Selects `neuron` of `layer`; the expert becomes its expert in the
  /// selection's partition (-1 when that partition lacks the layer). Views on
  /// another layer move to `layer` (FigureView). Emits neuronSelected,
  /// expertSelected and selectionChanged.
  void selectNeuron(int layer, int neuron);
  /// Selects `expert` of `layer` in the selection's partition; the neuron is
  /// kept when it belongs to that expert, else cleared. Emits expertSelected
  /// and selectionChanged.
  void selectExpert(int layer, int expert);

  void report(Level level, const QString& text);
  /// Asks the window to show the view whose tab reads `title` ("Corpus",
  /// "Neuron"): emits viewRequested (the main window switches tabs; nothing
  /// happens without a window, or when no tab has that title).
  void requestView(const QString& title) { Q_EMIT viewRequested(title); }
  /// Pipeline steps (one at a time, with the progress bar).
  JobRunner* jobs() const { return jobs_; }
  /// Every other background load and computation of the views: cancellable,
  /// superseded per key, joined by shutdown() (the window calls it on close).
  TaskRunner* tasks() const { return tasks_; }
  /// The workspace model, loaded lazily once and shared by every view and
  /// task (null without a workspace). A new workspace or model folder gets a
  /// new one.
  std::shared_ptr<const SharedModel> sharedModel();
  /// Cancels and joins every background task and job (blocking). Idempotent.
  void shutdown();

 Q_SIGNALS:
  void workspaceChanged();
  void artefactsChanged();
  void currentChanged(const QString& kind, const QString& path);
  void neuronSelected(int layer, int neuron);
  void expertSelected(int layer, int expert);
  /// Any part of selection() changed (site, neuron, expert, partition, router).
  void selectionChanged();
  void message(int level, const QString& text);
  /// A view asks to be shown (requestView); `title` is its tab's text.
  void viewRequested(const QString& title);

 private:
  std::optional<Workspace> ws_;
  std::vector<ArtefactRef> artefacts_;
  std::map<QString, std::shared_ptr<Recording>> recordings_;
  std::map<QString, std::shared_ptr<Partition>> partitions_;
  std::map<QString, std::shared_ptr<Router>> routers_;
  std::map<QString, std::shared_ptr<Evaluation>> evals_;
  std::map<QString, std::shared_ptr<Front>> fronts_;
  std::map<QString, std::shared_ptr<Analysis>> analyses_;
  std::map<QString, QString> reported_;  // path -> error already shown
  std::shared_ptr<const Tokenizer> tokenizer_;
  bool tokenizerTried_ = false;
  std::map<QString, QString> current_;
  /// The selected neuron's expert in the current partition (-1 if none).
  int expertOfNeuron(int layer, int neuron);
  int selLayer_ = -1, selNeuron_ = -1, selExpert_ = -1;
  JobRunner* jobs_;
  TaskRunner* tasks_;
  std::shared_ptr<const SharedModel> model_;
};

}  // namespace moefy::views
