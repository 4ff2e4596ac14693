// The layering of the source tree (scripts/check_layers.py): no include cycle
// between the folders of analysis/ beyond the listed debt, no Qt or views/
// include in the core or the CLI. The script is also checked against a tree
// that breaks each rule, so the test can fail.
#include <QtTest>
#include <fstream>

#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {
void writeFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}
}  // namespace

class TestLayering : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void sourceTreeHasNoNewCycle() {
    const QString script = QString::fromStdString((test::sourceDir() / "scripts" / "check_layers.py").string());
    test::RunResult r = test::runPython({script, QString::fromStdString(test::sourceDir().string())}, 60);
    qInfo().noquote() << QString::fromStdString(r.out) << QString::fromStdString(r.err);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
  }

  void scriptCatchesViolations() {
    const QString script = QString::fromStdString((test::sourceDir() / "scripts" / "check_layers.py").string());
    const fs::path root = test::freshDir("layering");
    writeFile(root / "analysis" / "a" / "a.h", "#include \"analysis/b/b.h\"\n");
    writeFile(root / "analysis" / "b" / "b.h", "#include \"analysis/c/c.h\"\n");
    writeFile(root / "analysis" / "c" / "c.h", "#include \"analysis/a/a.h\"\n#include <QString>\n");
    writeFile(root / "app" / "cli" / "x.cpp", "#include \"views/pipeline.h\"\n");
    test::RunResult r = test::runPython({script, QString::fromStdString(root.string())}, 60);
    qInfo().noquote() << QString::fromStdString(r.err);
    QCOMPARE(r.exitCode, 1);
    QVERIFY(r.err.find("include cycle between analysis/ folders: a -> b -> c -> a") != std::string::npos);
    QVERIFY(r.err.find("includes Qt header <QString>") != std::string::npos);
    QVERIFY(r.err.find("the CLI includes views/pipeline.h") != std::string::npos);
  }
};

QTEST_MAIN(TestLayering)
#include "test_layering.moc"
