// JobContext cancel/progress semantics and atomic file/folder writes.
#include <QtTest>
#include <atomic>
#include <thread>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "testutil.h"

using namespace moefy;

class TestJobsFs : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void cancelFromAnotherThread() {
    JobContext job;
    QVERIFY(!job.cancelled());
    job.checkCancel();  // does not throw
    std::thread t([&] { job.cancel(); });
    t.join();
    QVERIFY(job.cancelled());
    QVERIFY_THROWS_EXCEPTION(CancelledError, job.checkCancel());
  }

  void progressIsRateLimitedButCompletes() {
    int calls = 0;
    double last = -1;
    JobContext job([&](const std::string& stage, double f) { ++calls; last = f; QCOMPARE(stage, std::string("s")); },
                   nullptr);
    job.setStage("s");
    for (int i = 0; i < 100000; ++i) job.setProgress(i / 100000.0);
    job.setProgress(1.0);
    QVERIFY(calls < 1000);
    QCOMPARE(last, 1.0);
  }

  void atomicFileWrite() {
    auto dir = test::freshDir("jobs_fs_file");
    auto p = dir / "a.txt";
    writeFileAtomic(p, std::string("hello"));
    QCOMPARE(readFile(p), std::string("hello"));
    // A writer that fails leaves the old content and no temporary behind.
    QVERIFY_THROWS_EXCEPTION(IoError, writeFileAtomic(p, [](std::FILE*) { throw IoError("boom"); }));
    QCOMPARE(readFile(p), std::string("hello"));
    int entries = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++entries; }
    QCOMPARE(entries, 1);
  }

  void atomicFolderWrite() {
    auto dir = test::freshDir("jobs_fs_folder");
    auto out = dir / "out";
    writeFolderAtomic(out, false, [](const std::filesystem::path& tmp) { writeFileAtomic(tmp / "x", std::string("1")); });
    QCOMPARE(readFile(out / "x"), std::string("1"));
    // Existing output is refused without force, and left intact.
    QVERIFY_THROWS_EXCEPTION(IoError, writeFolderAtomic(out, false, [](const std::filesystem::path&) {}));
    // A failing build leaves the old folder untouched and no temporary.
    QVERIFY_THROWS_EXCEPTION(CancelledError, writeFolderAtomic(out, true, [](const std::filesystem::path& tmp) {
      writeFileAtomic(tmp / "y", std::string("2"));
      throw CancelledError();
    }));
    QCOMPARE(readFile(out / "x"), std::string("1"));
    QVERIFY(!std::filesystem::exists(out / "y"));
    int entries = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++entries; }
    QCOMPARE(entries, 1);
    // With force the folder is replaced.
    writeFolderAtomic(out, true, [](const std::filesystem::path& tmp) { writeFileAtomic(tmp / "z", std::string("3")); });
    QVERIFY(!std::filesystem::exists(out / "x"));
    QCOMPARE(readFile(out / "z"), std::string("3"));
  }

  void unwritableTargetIsAClearError() {
    {
      // A path under a regular file is unwritable even for root.
      auto dir = test::freshDir("jobs_fs_unwritable");
      writeFileAtomic(dir / "file", std::string("x"));
      try {
        writeFileAtomic(dir / "file" / "sub.txt", std::string("y"));
        QFAIL("expected IoError");
      } catch (const IoError& e) {
        QVERIFY(std::string(e.what()).find("sub.txt") != std::string::npos);
      }
    }
  }
};

QTEST_GUILESS_MAIN(TestJobsFs)
#include "test_jobs_fs.moc"
