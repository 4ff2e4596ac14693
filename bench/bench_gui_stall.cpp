// Longest GUI event-loop stall while a core job runs on the JobRunner thread.
//
//   QT_QPA_PLATFORM=offscreen build/bench/bench_gui_stall [seconds]
//
// A 2 ms QTimer measures the gaps between its ticks on the GUI thread. The
// baseline is the same window, with the same view switching every 300 ms,
// without a job; then a real core job runs (model forward passes through the
// engine) and the longest gap is reported against the baseline. Target: the
// longest stall during a job stays under 100 ms.
#include <QApplication>
#include <QElapsedTimer>
#include <QDir>
#include <QTimer>
#include <algorithm>
#include <cstdio>
#include <vector>

#include "tests/gui/gui_fixture.h"
#include "views/jobrunner.h"
#include "views/mainwindow.h"
#include "views/pipeline.h"

#include "bench/bench_common.h"

using namespace moefy;

namespace {
struct StallStats {
  double maxMs = 0, p99Ms = 0;
  int ticks = 0;
};

StallStats measure(moefy::views::MainWindow& w, double seconds, const std::function<bool()>& keepGoing) {
  std::vector<double> gaps;
  QElapsedTimer clock;
  clock.start();
  qint64 last = clock.nsecsElapsed();
  QTimer tick;
  tick.setInterval(2);
  tick.setTimerType(Qt::PreciseTimer);
  QObject::connect(&tick, &QTimer::timeout, [&] {
    qint64 now = clock.nsecsElapsed();
    gaps.push_back((now - last) / 1e6);
    last = now;
  });
  QTimer switcher;
  switcher.setInterval(300);
  QObject::connect(&switcher, &QTimer::timeout, [&] { w.tabs()->setCurrentIndex((w.tabs()->currentIndex() + 1) % w.tabs()->count()); });
  tick.start();
  switcher.start();
  QElapsedTimer run;
  run.start();
  while (run.elapsed() < seconds * 1000 && keepGoing()) QApplication::processEvents(QEventLoop::WaitForMoreEvents, 5);
  tick.stop();
  switcher.stop();
  StallStats s;
  s.ticks = static_cast<int>(gaps.size());
  if (gaps.empty()) return s;
  std::sort(gaps.begin(), gaps.end());
  s.maxMs = gaps.back();
  s.p99Ms = gaps[static_cast<size_t>(0.99 * (gaps.size() - 1))];
  return s;
}
}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  const char* usage = "usage: bench_gui_stall [seconds]   (default 6, in [0.1, 3600])\n";
  if (argc > 1 && bench::isHelp(argv[1])) {
    std::printf("%s", usage);
    return 0;
  }
  if (argc > 2) bench::badArg("bench_gui_stall", usage, argv[2]);
  const double seconds = argc > 1 ? bench::realArg("bench_gui_stall", usage, "seconds", argv[1], 0.1, 3600) : 6.0;
  QApplication app(argc, argv);
  QApplication::setApplicationName("MoEfy Studio bench");
  QString err;
  QString ws = test::fakeWorkspace(&err);
  if (ws.isEmpty()) {
    std::fprintf(stderr, "bench_gui_stall: %s\n", qPrintable(err));
    return 1;
  }
  views::MainWindow w;
  w.resize(1300, 850);
  w.show();
  if (!w.openWorkspace(ws)) return 1;
  for (int i = 0; i < 50; ++i) QApplication::processEvents();

  StallStats base = measure(w, seconds / 2, [] { return true; });

  views::JobRunner* runner = w.context()->jobs();
  const auto out = std::filesystem::path((ws + "/bench-out").toStdString());
  const auto model = std::filesystem::path((ws + "/model").toStdString());
  // The job: the GUI's own record step (the recorder over the workspace corpus,
  // restarted whenever it finishes) when this build has it, else engine forward passes.
  const bool haveRecord = views::findStep("record") != nullptr;
  int jobsRun = 0;
  QString jobErr;
  auto startJob = [&] {
    if (haveRecord) {
      views::PipelineJob pj;
      QString e;
      QString outName = QString("bench-rec-%1").arg(jobsRun);
      QDir(ws + "/recordings/" + outName).removeRecursively();
      if (!views::makeStepJob("record", w.context(), {{"out", outName}, {"seq-len", 64}, {"samples", 512}, {"tokens", 0}}, &pj, &e)) {
        jobErr = e;
        return;
      }
      runner->start(pj.name, pj.fn);
    } else {
      runner->start("forward", [&](JobContext& job) { test::forwardJob(model, out, 1000000, job); });
    }
    ++jobsRun;
  };
  QObject::connect(runner, &views::JobRunner::finished, [&](const QString&, bool ok, bool, const QString& e) {
    if (!ok && !e.isEmpty()) jobErr = e;
  });
  startJob();
  StallStats job = measure(w, seconds, [&] {
    if (!runner->busy() && jobErr.isEmpty()) startJob();
    return jobErr.isEmpty();
  });
  bool ranThrough = jobErr.isEmpty();
  runner->cancel();
  runner->wait(5000);
  std::filesystem::remove_all(out);
  for (int i = 0; i < jobsRun; ++i) QDir(ws + QString("/recordings/bench-rec-%1").arg(i)).removeRecursively();

  std::printf("bench_gui_stall: window with view switching every 300 ms, 2 ms tick timer\n");
  std::printf("  baseline (no job):      longest stall %7.1f ms, p99 %6.1f ms, %d ticks\n", base.maxMs, base.p99Ms, base.ticks);
  std::printf("  during core jobs (%s, %d run): longest stall %7.1f ms, p99 %6.1f ms, %d ticks%s\n",
              haveRecord ? "record" : "engine forward", jobsRun, job.maxMs, job.p99Ms, job.ticks,
              ranThrough ? "" : qPrintable(" (job failed: " + jobErr + ")"));
  std::printf("  ratio job/baseline:     %.2fx (longest), %.2fx (p99)\n", job.maxMs / std::max(0.01, base.maxMs),
              job.p99Ms / std::max(0.01, base.p99Ms));
  std::printf("  target longest < 100 ms: %s\n", job.maxMs < 100 ? "met" : "NOT met");
  return 0;
}
