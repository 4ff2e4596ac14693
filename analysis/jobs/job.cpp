#include "analysis/jobs/job.h"

#include "analysis/common/error.h"

namespace moefy {

void JobContext::setStage(const std::string& stage) {
  stage_ = stage;
  lastReport_ = std::chrono::steady_clock::now();
  if (progress_) progress_(stage_, 0.0);
}

void JobContext::setProgress(double fraction) {
  if (!progress_) return;
  auto now = std::chrono::steady_clock::now();
  // Rate-limit to ~20 updates/s so tight loops can report freely; always
  // deliver completion.
  if (fraction < 1.0 && now - lastReport_ < std::chrono::milliseconds(50)) return;
  lastReport_ = now;
  progress_(stage_, fraction < 0 ? 0 : (fraction > 1 ? 1 : fraction));
}

void JobContext::log(const std::string& line) const {
  if (log_) log_(line);
}

void JobContext::checkCancel() const {
  if (cancelled_.load()) throw CancelledError();
}

JobContext& JobContext::none() {
  static JobContext ctx;
  return ctx;
}

}  // namespace moefy
