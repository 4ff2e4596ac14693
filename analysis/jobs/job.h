#pragma once
// JobContext: what every long core function takes. It reports progress with a
// stage name, carries a cancel flag that the function polls between chunks
// (checkCancel() throws CancelledError), and forwards log lines.
//
// Thread-safety: cancel() may be called from any thread; the callbacks are
// invoked on the job's own thread and must marshal to a GUI thread themselves.
#include <atomic>
#include <chrono>
#include <functional>
#include <string>

namespace moefy {

class JobContext {
 public:
  using ProgressFn = std::function<void(const std::string& stage, double fraction)>;
  using LogFn = std::function<void(const std::string& line)>;

  JobContext() = default;
  JobContext(ProgressFn progress, LogFn log) : progress_(std::move(progress)), log_(std::move(log)) {}

  /// Starts a named stage; progress within it restarts at 0.
  void setStage(const std::string& stage);
  /// Reports progress in [0, 1] within the current stage. Cheap: rate-limited.
  void setProgress(double fraction);
  const std::string& stage() const { return stage_; }

  void log(const std::string& line) const;

  /// Requests cancellation; safe from any thread.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  /// Throws CancelledError if cancel() was called. Call between chunks.
  void checkCancel() const;

  /// A context that reports nothing and is never cancelled.
  static JobContext& none();

 private:
  ProgressFn progress_;
  LogFn log_;
  std::string stage_;
  std::atomic<bool> cancelled_{false};
  std::chrono::steady_clock::time_point lastReport_{};
};

}  // namespace moefy
