#pragma once
// JobRunner: runs any core function that takes a moefy::JobContext& on a
// worker QThread. Progress, stage and log lines are marshalled to the GUI
// thread through queued signals; cancel() forwards to JobContext::cancel().
// One job at a time per runner.
#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <functional>
#include <map>
#include <memory>

namespace moefy {
class JobContext;
}

namespace moefy::views {

class JobRunner : public QObject {
  Q_OBJECT
 public:
  /// Runs on the worker thread. Throwing moefy::Error (or std::exception)
  /// ends the job with that message; CancelledError ends it as cancelled.
  using Fn = std::function<void(moefy::JobContext&)>;
  /// Runs on the GUI thread after a successful job.
  using Done = std::function<void()>;

  explicit JobRunner(QObject* parent = nullptr);
  ~JobRunner() override;

  /// Starts `fn`; returns false (and does nothing) while another job runs.
  bool start(const QString& name, Fn fn, Done onSuccess = {});
  bool busy() const { return busy_; }
  QString currentName() const { return name_; }
  /// Requests cancellation (the job stops at its next checkCancel()).
  void cancel();
  /// True when the last finished job completed although cancel() had been
  /// requested (the request came after its last checkCancel()): its output is
  /// complete on disk, and finished() reported it as ok.
  bool cancelCameLate() const { return cancelCameLate_; }
  /// Blocks (processing events) until the current job ends or `ms` pass.
  bool wait(int ms);

 Q_SIGNALS:
  void started(const QString& name);
  /// fraction in [0,1] within `stage`; eta in seconds (< 0 = unknown).
  void progress(const QString& stage, double fraction, double etaSeconds);
  void logLine(const QString& line);
  /// ok: completed; cancelled: stopped by cancel(); error: message otherwise.
  void finished(const QString& name, bool ok, bool cancelled, const QString& error);

 private:
  void onProgress(const QString& stage, double fraction);
  void onDone(bool ok, bool cancelled, const QString& error);

  bool busy_ = false;
  bool cancelCameLate_ = false;
  QString name_;
  QString stage_;
  QElapsedTimer stageTimer_;
  std::shared_ptr<moefy::JobContext> ctx_;
  QThread* thread_ = nullptr;
  Done onSuccess_;
};

/// TaskRunner: the studio's background work that is not a pipeline step
/// (loading an artefact, a model summary, a corpus, a typed text's
/// activations, a layout). Every task is a core-style function taking a
/// JobContext, run on its own worker thread and owned by this runner:
///  - cancellable: cancel(key) / cancelAll() forward to JobContext::cancel();
///  - superseded: starting a task with the key of a running one cancels the
///    older one, whose result is then dropped (never applied);
///  - joined: shutdown() (and the destructor) cancel every task and wait for
///    its thread, so closing the window leaves no worker thread behind.
/// The work function returns the GUI-thread continuation that applies its
/// result; it runs only if the task is still current and its owner alive.
/// Workers never touch widgets (STYLE.md habit 5).
class TaskRunner : public QObject {
  Q_OBJECT
 public:
  /// Runs on the worker thread; returns what to do on the GUI thread.
  using Work = std::function<std::function<void()>(moefy::JobContext&)>;
  /// Runs on the GUI thread with the error message (not for cancellations).
  using OnError = std::function<void(const QString&)>;

  explicit TaskRunner(QObject* parent = nullptr);
  ~TaskRunner() override;

  /// Starts `work` under `key`, superseding a running task with the same key.
  /// `owner` (may be null) guards the continuation and onError: they are
  /// dropped if it was destroyed. Returns the task's id. After shutdown()
  /// nothing starts (returns 0).
  quint64 run(const QString& key, QObject* owner, Work work, OnError onError = {});
  /// Cancels the task running under `key` (its result is dropped).
  void cancel(const QString& key);
  void cancelAll();
  /// Cancels every task and joins every worker thread (blocking). Idempotent.
  void shutdown();
  /// Tasks whose thread has not been joined yet.
  int running() const { return static_cast<int>(tasks_.size()); }
  bool isRunning(const QString& key) const;
  /// Blocks (processing events) until no task runs or `ms` pass.
  bool wait(int ms);
  /// Worker threads of every TaskRunner that are still executing (process-wide).
  static int liveThreads();

 Q_SIGNALS:
  /// A task ended: applied (ok), superseded/cancelled, or failed (error).
  void taskFinished(const QString& key, bool ok, bool cancelled, const QString& error);

 private:
  struct Task;
  void finish(quint64 id, bool ok, bool cancelled, const QString& error, std::function<void()> apply);
  std::map<quint64, std::shared_ptr<Task>> tasks_;
  std::map<QString, quint64> current_;  ///< key -> id of the newest task
  quint64 nextId_ = 1;
  bool shutDown_ = false;
};

}  // namespace moefy::views
