// A full disk, simulated with a file-size limit (bash `ulimit -f`, SIGXFSZ
// ignored, so a write past the limit fails with EFBIG like ENOSPC would):
// record, split and export must stop with one clear line naming the file,
// exit 1, leave no partial or temporary folder, and keep an existing output
// that --force would have replaced.
#include <QtTest>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/testutil.h"

namespace fs = std::filesystem;
using namespace moefy;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

QString cliPath() {
  QString cli = qEnvironmentVariable("MOEFY_CLI");
  return cli.isEmpty() ? q(test::binaryDir() / "app" / "moefy") : cli;
}

/// moefy ARGS with every file limited to `kib` KiB. `trapped`: SIGXFSZ is
/// ignored by the shell (inherited); else moefy gets the default action (kill)
/// unless it ignores the signal itself, as it must.
test::RunResult runLimited(int kib, const QStringList& args, bool trapped = true) {
  QStringList a{"-c",
                QString("%1ulimit -f %2; exec \"$0\" \"$@\"").arg(trapped ? "trap '' XFSZ; " : "").arg(kib),
                cliPath()};
  a << args;
  return test::run("bash", a, 300);
}

std::string lastLine(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

/// Names in `dir` that look like a temporary (".tmp-") or partial `stem`.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path().filename().string());
  return out;
}

}  // namespace

class TestFullDisk : public QObject {
  Q_OBJECT
  fs::path root_, model_, corpus_;

  void expectDiskError(const test::RunResult& r, const std::string& cmd, const fs::path& out) {
    const std::string last = lastLine(r.err);
    qInfo() << "moefy" << cmd.c_str() << "on a full disk ->" << r.exitCode << last.c_str();
    QCOMPARE(r.exitCode, 1);
    QVERIFY2(last.rfind("moefy " + cmd + ": ", 0) == 0, last.c_str());
    QVERIFY2(last.find("write failed") != std::string::npos, last.c_str());
    QVERIFY2(last.find(out.filename().string()) != std::string::npos, last.c_str());
    const auto left = leftovers(out.parent_path());
    QVERIFY2(left.empty(), left.empty() ? "" : left.front().c_str());
  }

 private Q_SLOTS:
  void initTestCase() {
    root_ = test::freshDir("full_disk");
    model_ = test::sourceDir() / "data" / "models" / "brown-relu";
    corpus_ = test::sourceDir() / "data" / "corpus" / "brown" / "heldout";
    QVERIFY(fs::exists(model_ / "config.json"));
  }

  void recordOnFullDisk() {
    const fs::path out = root_ / "rec_full";
    auto r = runLimited(1024, {"record", q(model_), q(corpus_), "--tokens", "1024", "--samples", "256", "--out",
                               q(out)});
    expectDiskError(r, "record", out);
    QVERIFY(!fs::exists(out));
  }

  void fileSizeSignalIsAFullDisk() {
    // Plain `ulimit -f` (no trap): the kernel sends SIGXFSZ, which used to kill
    // moefy and leave its temporary behind.
    const fs::path out = root_ / "rec_xfsz";
    auto r = runLimited(1024, {"record", q(model_), q(corpus_), "--tokens", "1024", "--samples", "256", "--out", q(out)},
                        false);
    expectDiskError(r, "record", out);
    QVERIFY2(lastLine(r.err).find("File too large") != std::string::npos, r.err.c_str());
    QVERIFY(!fs::exists(out));
  }

  void splitAndExportOnFullDiskKeepOldOutput() {
    // The real artefacts first, without a limit.
    const fs::path rec = root_ / "rec", part = root_ / "part", router = root_ / "router";
    QCOMPARE(test::runCli({"record", q(model_), q(corpus_), "--tokens", "1024", "--samples", "512", "--out", q(rec),
                           "--quiet"})
                 .exitCode,
             0);
    QCOMPARE(test::runCli({"split", q(rec), "--method", "random", "--experts", "16", "--out", q(part), "--quiet"})
                 .exitCode,
             0);
    QCOMPARE(test::runCli({"route", q(model_), q(rec), q(part), "--router", "similarity", "--out", q(router),
                           "--quiet"})
                 .exitCode,
             0);
    // split --force over an existing partition, on a full disk: the old one stays.
    const std::string before = [&] {
      std::ifstream f(part / "partition.json");
      return std::string(std::istreambuf_iterator<char>(f), {});
    }();
    auto r = runLimited(4, {"split", q(rec), "--method", "coact", "--experts", "16", "--out", q(part), "--force"});
    expectDiskError(r, "split", part);
    std::ifstream f(part / "partition.json");
    QCOMPARE(std::string(std::istreambuf_iterator<char>(f), {}), before);
    QVERIFY(fs::exists(part / "labels.safetensors"));
    // export on a full disk: no folder at all.
    const fs::path moe = root_ / "moe";
    r = runLimited(512, {"export", q(model_), q(part), q(router), "--out", q(moe)});
    expectDiskError(r, "export", moe);
    QVERIFY(!fs::exists(moe));
  }
};

QTEST_GUILESS_MAIN(TestFullDisk)
#include "test_full_disk.moc"
