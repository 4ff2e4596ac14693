#pragma once
// JobRunner: runs any core function that takes a moefy::JobContext& on a
// worker QThread. Progress, stage and log lines are marshalled to the GUI
// thread through queued signals; cancel() forwards to JobContext::cancel().
// One job at a time per runner.
#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <functional>
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
  QString name_;
  QString stage_;
  QElapsedTimer stageTimer_;
  std::shared_ptr<moefy::JobContext> ctx_;
  QThread* thread_ = nullptr;
  Done onSuccess_;
};

}  // namespace moefy::views
