// JobContext cancel/progress semantics and atomic file/folder writes.
#include <QtTest>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

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
    // An artefact is recognised by its metadata file (here an evaluation's).
    writeFolderAtomic(out, false, [](const std::filesystem::path& tmp) {
      writeFileAtomic(tmp / "eval.json", std::string("{}"));
      writeFileAtomic(tmp / "x", std::string("1"));
    });
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
    writeFolderAtomic(out, true, [](const std::filesystem::path& tmp) {
      writeFileAtomic(tmp / "eval.json", std::string("{}"));
      writeFileAtomic(tmp / "z", std::string("3"));
    });
    QVERIFY(!std::filesystem::exists(out / "x"));
    QCOMPARE(readFile(out / "z"), std::string("3"));
    entries = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++entries; }
    QCOMPARE(entries, 1);  // no temporary, no ".old", no lock file left
  }

  void forceReplacesOnlyTheSameKind() {
    namespace fs = std::filesystem;
    auto dir = test::freshDir("jobs_fs_kinds");
    auto partition = [](const fs::path& tmp) { writeFileAtomic(tmp / "partition.json", std::string("{}")); };
    // A model folder, a plain file, a folder of unknown files, another kind's
    // artefact: each is refused with --force, named, and left as it was.
    fs::create_directories(dir / "model");
    writeFileAtomic(dir / "model" / "config.json", std::string("{\"model_type\": \"gpt2\"}"));
    writeFileAtomic(dir / "notes.txt", std::string("my notes"));
    fs::create_directories(dir / "mine");
    writeFileAtomic(dir / "mine" / "a.txt", std::string("a"));
    fs::create_directories(dir / "rec");
    writeFileAtomic(dir / "rec" / "manifest.json", std::string("{\"format\": \"moefy-recording\"}"));
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"model", "is a model folder, not a partition"},
        {"notes.txt", "is a plain file, not "},
        {"mine", "is a folder, not "},
        {"rec", "is a recording, not a partition"}};
    for (const auto& [name, message] : cases) {
      try {
        writeFolderAtomic(dir / name, true, partition);
        QFAIL(("--force replaced " + name).c_str());
      } catch (const IoError& e) {
        qInfo() << e.what();
        QVERIFY2(std::string(e.what()).find(message) != std::string::npos, e.what());
        QVERIFY2(std::string(e.what()).find(name) != std::string::npos, e.what());
      }
    }
    QCOMPARE(readFile(dir / "notes.txt"), std::string("my notes"));
    QVERIFY(fs::exists(dir / "model" / "config.json") && fs::exists(dir / "mine" / "a.txt"));
    QCOMPARE(artefactKindOf(dir / "rec"), std::string("recording"));
    // An input of the command is never replaced, even of the same kind.
    writeFolderAtomic(dir / "part", false, partition);
    try {
      writeFolderAtomic(dir / "part", true, partition, {dir / "rec", dir / "part"});
      QFAIL("an input was replaced");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("input of this command") != std::string::npos, e.what());
    }
    QVERIFY_THROWS_EXCEPTION(IoError, checkOutput(dir / "rec" / "sub", true, "partition", {dir / "rec"}));
    // Same kind, not an input: replaced; an empty folder is always fine.
    writeFolderAtomic(dir / "part", true, partition, {dir / "rec"});
    fs::create_directories(dir / "empty");
    writeFolderAtomic(dir / "empty", false, partition);
    QCOMPARE(artefactKindOf(dir / "empty"), std::string("partition"));
  }

  void interruptedReplaceIsRecovered() {
    namespace fs = std::filesystem;
    auto dir = test::freshDir("jobs_fs_recover");
    auto eval = [](const std::string& v) {
      return [v](const fs::path& tmp) { writeFileAtomic(tmp / "eval.json", v); };
    };
    // A kill between "OUT -> OUT.tmp-X.old" and "OUT.tmp-Y -> OUT" (the two
    // renames of an older version) leaves no OUT: the next run restores it,
    // and removes the complete-but-unplaced new folder as a stale temporary.
    fs::create_directories(dir / "out.tmp-1234abcd.old");
    writeFileAtomic(dir / "out.tmp-1234abcd.old" / "eval.json", std::string("old"));
    fs::create_directories(dir / "out.tmp-5678ef01");
    writeFileAtomic(dir / "out.tmp-5678ef01" / "eval.json", std::string("new"));
    fs::create_directories(dir / "other.tmp-99999999");  // another output's temporary: not ours
    { OutputLock lock(dir / "out"); }
    QCOMPARE(readFile(dir / "out" / "eval.json"), std::string("old"));
    QVERIFY(!fs::exists(dir / "out.tmp-1234abcd.old") && !fs::exists(dir / "out.tmp-5678ef01"));
    QVERIFY(fs::exists(dir / "other.tmp-99999999"));
    QVERIFY(!fs::exists(dir / "out.lock"));
    // A stale temporary (a killed build, hundreds of MB in the field) is
    // reclaimed when the same output is written again.
    fs::create_directories(dir / "out.tmp-deadbeef");
    writeFileAtomic(dir / "out.tmp-deadbeef" / "big", std::string(4096, 'x'));
    writeFolderAtomic(dir / "out", true, eval("newer"));
    QCOMPARE(readFile(dir / "out" / "eval.json"), std::string("newer"));
    QVERIFY(!fs::exists(dir / "out.tmp-deadbeef"));
  }

  void outputLockExcludesAnotherWriter() {
    namespace fs = std::filesystem;
    auto dir = test::freshDir("jobs_fs_lock");
    // Another process holding the lock: an independent open file description
    // with flock, as a second `moefy record --resume` would hold it.
    const fs::path lockFile = dir / "rec.lock";
    const int fd = ::open(lockFile.c_str(), O_RDWR | O_CREAT, 0644);
    QVERIFY(fd >= 0);
    QCOMPARE(::flock(fd, LOCK_EX | LOCK_NB), 0);
    try {
      OutputLock lock(dir / "rec");
      QFAIL("a locked output was taken");
    } catch (const IoError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).find("another moefy process is writing it") != std::string::npos, e.what());
    }
    QVERIFY_THROWS_EXCEPTION(IoError, writeFolderAtomic(dir / "rec", false, [](const fs::path&) {}));
    ::close(fd);
    { OutputLock lock(dir / "rec"); OutputLock nested(dir / "rec"); }  // re-entrant within a process
    QVERIFY(!fs::exists(lockFile));
  }

  void fileSizeLimitIsAWriteError() {
    // `ulimit -f` raises SIGXFSZ, which kills by default: the atomic writers
    // ignore it, so the write fails with EFBIG like a full disk, the
    // temporary is removed and the error names the file.
    namespace fs = std::filesystem;
    auto dir = test::freshDir("jobs_fs_fsize");
    struct rlimit old{};
    QCOMPARE(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    QCOMPARE(setrlimit(RLIMIT_FSIZE, &lim), 0);
    std::string error;
    try {
      writeFileAtomic(dir / "big.bin", std::string(1 << 20, 'x'));
    } catch (const IoError& e) {
      error = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old);
    qInfo() << error.c_str();
    QVERIFY2(error.find("big.bin") != std::string::npos && error.find("File too large") != std::string::npos,
             error.c_str());
    int entries = 0;
    for (auto& e : fs::directory_iterator(dir)) { (void)e; ++entries; }
    QCOMPARE(entries, 0);
  }

  void readFileRefusesFolders() {
    auto dir = test::freshDir("jobs_fs_read");
    std::filesystem::create_directories(dir / "config.json");
    try {
      readFile(dir / "config.json");
      QFAIL("a folder was read as a file");
    } catch (const IoError& e) {
      QVERIFY2(std::string(e.what()).find("config.json: is a folder") != std::string::npos, e.what());
    }
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
