// Terminal progress for CLI jobs, Ctrl-C as cancel, and link warnings.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "analysis/common/distributed.h"
#include "analysis/jobs/job.h"
#include "analysis/project/link_check.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {
std::atomic<JobContext*> g_active{nullptr};
void onSigint(int) {
  if (JobContext* j = g_active.load()) j->cancel();  // atomic store only: signal-safe
}
// SIGTERM cancels a running job once (atomics only); without one, or on a
// second SIGTERM, it terminates as by default (signal and raise are signal-safe).
void onSigterm(int sig) {
  JobContext* j = g_active.load();
  if (j && !j->cancelled()) {
    j->cancel();
    return;
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
}  // namespace

int warnLinkProblems(const std::string& command, ArtefactKind kind, const std::filesystem::path& dir) {
  int problems = 0;
  for (const LinkStatus& s : artefactLinks(kind, dir)) {
    if (s.state != LinkStatus::Missing && s.state != LinkStatus::Stale) continue;
    // The message starts "<folder name>: "; the full folder path replaces it.
    const size_t at = s.message.find(": ");
    std::cerr << "moefy " << command << ": warning: " << artefactKindInfo(kind).name << " " << dir.string() << ": "
              << (at == std::string::npos ? s.message : s.message.substr(at + 2)) << "\n";
    ++problems;
  }
  return problems;
}

std::unique_ptr<JobContext> makeCliJob(const Args& args) {
  // Under mpirun only rank 0 reports progress (the ranks move in step).
  const bool quiet = args.has("quiet") || dist::launchedRank() != 0;
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto lastDecile = std::make_shared<int>(-1);
  auto job = std::make_unique<JobContext>(
      [quiet, start, lastDecile](const std::string& stage, double f) {
        if (quiet) return;
        int decile = static_cast<int>(f * 10);
        if (f == 0.0) *lastDecile = -1;
        if (decile == *lastDecile) return;
        *lastDecile = decile;
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
        std::fprintf(stderr, "[%7.1fs] %-28s %3d%%\n", s, stage.c_str(), static_cast<int>(f * 100 + 0.5));
      },
      [quiet](const std::string& line) {
        if (!quiet) std::fprintf(stderr, "%s\n", line.c_str());
      });
  g_active.store(job.get());
  std::signal(SIGINT, onSigint);
  // mpirun passes Ctrl-C on to its ranks as SIGTERM (then SIGKILL a moment
  // later): cancel the same way, so a rank can say what it leaves on disk.
  std::signal(SIGTERM, onSigterm);
  return job;
}

}  // namespace moefy::cli
