// The studio owns its background work (issue 11 item 6): every load and
// computation of the views runs through one TaskRunner that cancels,
// supersedes and joins its tasks; closing the window during a running task
// and a running pipeline job exits cleanly with no worker thread left. Also
// the data-layer defects of issue 20: artefacts written into an
// artefact-holding kind folder appear after Rescan (2), router tooltips read
// the per-layer expert list (7), and the Model view's summary comes from
// config.json and the safetensors headers only.
#include <QAbstractButton>
#include <QApplication>
#include <QComboBox>
#include <QDir>
#include <QDirIterator>
#include <QMessageBox>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTimer>
#include <QTreeWidget>
#include <QtTest>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "gui_fixture.h"
#include "views/artefacts.h"
#include "views/context.h"
#include "views/jobrunner.h"
#include "views/mainwindow.h"
#include "views/views.h"

using namespace moefy;
using namespace moefy::views;

namespace {

// Threads of this process whose name is `name` (/proc/self/task/*/comm).
int threadsNamed(const QString& name) {
  int n = 0;
  QDirIterator it("/proc/self/task", QDir::Dirs | QDir::NoDotAndDotDot);
  while (it.hasNext()) {
    QFile f(it.next() + "/comm");
    if (f.open(QIODevice::ReadOnly) && QString::fromUtf8(f.readAll()).trimmed() == name) ++n;
  }
  return n;
}

// A task that runs until cancelled (checking at least every 10 ms) or `ms` pass.
TaskRunner::Work spinning(std::atomic<int>* started, int ms, int result, int* out) {
  return [started, ms, result, out](JobContext& job) -> std::function<void()> {
    started->fetch_add(1);
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      job.checkCancel();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return [out, result] { *out = result; };
  };
}

}  // namespace

class TestStudioTasks : public QObject {
  Q_OBJECT
  QString ws_;

 private Q_SLOTS:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QString err;
    ws_ = test::fakeWorkspace(&err);
    QVERIFY2(!ws_.isEmpty(), qPrintable(err));
  }

  void runnerSupersedesCancelsAndJoins() {
    std::atomic<int> started{0};
    int applied = 0;
    {
      TaskRunner r;
      QSignalSpy fin(&r, &TaskRunner::taskFinished);
      r.run("k", nullptr, spinning(&started, 5000, 1, &applied));
      QTRY_COMPARE(started.load(), 1);
      r.run("k", nullptr, spinning(&started, 50, 2, &applied));  // supersedes the first
      QVERIFY(r.wait(10000));
      QCOMPARE(applied, 2);  // only the newer result is applied
      QCOMPARE(fin.count(), 2);
      // A cancelled task's result is dropped.
      r.run("c", nullptr, spinning(&started, 5000, 3, &applied));
      QTRY_COMPARE(started.load(), 3);
      r.cancel("c");
      QVERIFY(r.wait(10000));
      QCOMPARE(applied, 2);
      // An error reaches onError on the GUI thread.
      QString error;
      r.run(
          "e", nullptr, [](JobContext&) -> std::function<void()> { throw FormatError("x.json: broken"); },
          [&](const QString& e) { error = e; });
      QVERIFY(r.wait(10000));
      QCOMPARE(error, QString("x.json: broken"));
      // A task whose owner is gone is not applied.
      auto* owner = new QObject;
      r.run("o", owner, spinning(&started, 100, 4, &applied));
      delete owner;
      QVERIFY(r.wait(10000));
      QCOMPARE(applied, 2);
      // shutdown() (the destructor) joins a still running task promptly.
      r.run("long", nullptr, spinning(&started, 60000, 5, &applied));
      QTRY_COMPARE(started.load(), 5);
    }
    QCOMPARE(TaskRunner::liveThreads(), 0);
    // A joined thread can stay listed in /proc/self/task for a moment on a loaded machine.
    QTRY_COMPARE(threadsNamed("moefy-task"), 0);
    QCOMPARE(applied, 2);
  }

  void closingTheStudioDuringRunningWorkLeavesNoThread() {
    QTemporaryDir tmp;
    std::atomic<int> started{0};
    int applied = 0;
    QElapsedTimer el;
    {
      // Owned so that a failed check below still cancels and joins the job
      // (a leaked window would leave a 100000-step forward job running).
      std::unique_ptr<MainWindow> w(new MainWindow);
      w->resize(1200, 800);
      w->show();
      QVERIFY(w->openWorkspace(ws_));
      // A view-style task and a pipeline job (a real forward-pass job), both running.
      w->context()->tasks()->run("test-spin", w.get(), spinning(&started, 120000, 1, &applied));
      const std::filesystem::path model = (ws_ + "/model").toStdString();
      const std::filesystem::path out = tmp.filePath("hidden").toStdString();
      QVERIFY(w->context()->jobs()->start(
          "forward", [model, out](JobContext& job) { test::forwardJob(model, out, 100000, job); }));
      QTRY_COMPARE(started.load(), 1);
      QTest::qWait(200);
      QTRY_VERIFY(threadsNamed("moefy-task") >= 1);  // thread start can lag on a loaded machine
      // >= 1: the job thread, plus the OpenMP workers it starts, which inherit its name.
      QTRY_VERIFY(threadsNamed("moefy-job") >= 1);
      // The window asks before cancelling a running job: answer Yes as a user would.
      QTimer::singleShot(100, [] {
        if (auto* box = qobject_cast<QMessageBox*>(QApplication::activeModalWidget()))
          box->button(QMessageBox::Yes)->click();
      });
      el.start();
      w->close();
      w.reset();  // joins every worker
    }
    qInfo() << "window closed and workers joined in" << el.elapsed() << "ms";
    QVERIFY(el.elapsed() < 20000);
    QCOMPARE(TaskRunner::liveThreads(), 0);
    // A joined thread can stay listed in /proc/self/task for a moment on a loaded machine.
    QTRY_COMPARE(threadsNamed("moefy-task"), 0);
    QTRY_COMPARE(threadsNamed("moefy-job"), 0);  // OpenMP workers leave when their master thread has
    QCOMPARE(applied, 0);
    QVERIFY(!QFileInfo::exists(tmp.filePath("hidden")));  // the cancelled job wrote nothing
  }

  void lateCancelReportsWhatIsOnDisk() {
    // The job writes its artefact completely, then the cancel arrives before
    // it returns (issue 20 defect 3): the studio must say the output is on disk.
    MainWindow w;
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    QTemporaryDir tmp;
    const std::filesystem::path out = tmp.filePath("late").toStdString();
    std::atomic<bool> written{false};
    QSignalSpy fin(w.context()->jobs(), &JobRunner::finished);
    QVERIFY(w.context()->jobs()->start("late job", [&](JobContext&) {
      writeFolderAtomic(out, false, [](const std::filesystem::path& t) { writeFileAtomic(t / "a.json", "{}"); });
      written = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // no checkCancel after the write
    }));
    QTRY_VERIFY(written.load());
    QTest::mouseClick(w.cancelButton(), Qt::LeftButton);
    QTRY_COMPARE_WITH_TIMEOUT(fin.count(), 1, 10000);
    QVERIFY(fin.at(0).at(1).toBool());   // ok: it completed
    QVERIFY(!fin.at(0).at(2).toBool());  // not reported as cancelled
    QVERIFY(w.context()->jobs()->cancelCameLate());
    QVERIFY(std::filesystem::exists(out / "a.json"));
    bool said = false, wrong = false;
    for (int i = 0; i < w.issues()->count(); ++i) {
      said |= w.issues()->item(i)->text().contains("written completely");
      wrong |= w.issues()->item(i)->text().contains("nothing was written");
    }
    QVERIFY(said);
    QVERIFY(!wrong);
  }

  void routerViewFollowsItsPartitionPicker() {
    // Issue 20 defect 7: the Partition picker drives the Router view; a trained
    // router over another partition is refused with a message; the oracle
    // routes whichever partition is picked.
    MainWindow w;
    w.resize(1300, 850);
    w.show();
    QVERIFY(w.openWorkspace(ws_));
    RouterView* rv = nullptr;
    for (QWidget* v : w.views())
      if (auto* r = qobject_cast<RouterView*>(v)) rv = r;
    QVERIFY(rv);
    w.tabs()->setCurrentWidget(rv);
    auto pick = [&](const QString& path) {
      bool found = false;
      for (QComboBox* box : rv->findChildren<QComboBox*>()) {
        const int i = box->findData(path);
        if (i >= 0) box->setCurrentIndex(i), found = true;
      }
      QApplication::processEvents();
      rv->refresh();
      return found;
    };
    const QString coact = QDir::cleanPath(ws_ + "/partitions/coact-E16-s0");
    const QString random = QDir::cleanPath(ws_ + "/partitions/random-E16-s0");
    QVERIFY2(QFileInfo::exists(coact) && QFileInfo::exists(random), "fake workspace partitions");
    QVERIFY(pick(QDir::cleanPath(ws_ + "/routers/similarity-coact")));
    QVERIFY(rv->hasData());
    QVERIFY(pick(random));
    QVERIFY(!rv->hasData());  // similarity router trained on coact: refused, with a message
    QVERIFY(pick(QDir::cleanPath(ws_ + "/routers/oracle-coact")));
    QVERIFY(rv->hasData());  // a new router moves the picker to its partition
    QVERIFY(pick(random));
    QVERIFY(rv->hasData());  // the oracle routes the picked partition
    QVERIFY2(rv->csvData().size() > 100, "router view data");
  }

  void modelSummaryReadsHeadersOnly() {
    const std::filesystem::path model = (ws_ + "/model").toStdString();
    const nlohmann::json files = ModelSummary::read(ws_ + "/model").info;
    const nlohmann::json loaded = describeModel(loadModel(model));
    for (const auto& [k, v] : loaded.items()) {
      if (k == "fingerprint") continue;  // samples weight values: only a loaded model has it
      QVERIFY2(files.contains(k), k.c_str());
      QCOMPARE(QString::fromStdString(files[k].dump()), QString::fromStdString(v.dump()));
    }
    qInfo() << "summary from headers:" << files["parameters"].get<long long>() << "parameters";
  }

  void artefactsInsideAnArtefactFolderAppearAfterRescan() {
    // The demo workspace maps "routers" to a folder that is itself a router;
    // a router written into it must appear after Rescan (issue 20 defect 2).
    QTemporaryDir tmp;
    const QString ws = tmp.filePath("ws");
    Workspace w0 = Workspace::load(ws_);
    w0.dir = ws;
    w0.modelPath = ws_ + "/model";
    w0.corpusPath = ws_ + "/corpus";
    const QString routerFolder = tmp.filePath("demo-router");
    const QString someRouter = w0.resolve(ws_ + "/routers/oracle-coact");
    QVERIFY(QFileInfo::exists(someRouter + "/router.json"));
    QVERIFY(QDir().mkpath(routerFolder));
    for (const QString& f : QDir(someRouter).entryList(QDir::Files))
      QVERIFY(QFile::copy(someRouter + "/" + f, routerFolder + "/" + f));
    w0.folders["routers"] = routerFolder;
    w0.save();
    MainWindow w;
    w.resize(1200, 800);
    QVERIFY(w.openWorkspace(ws));
    QCOMPARE(w.context()->paths("router").size(), 1);
    QVERIFY(QDir().mkpath(routerFolder + "/written-later"));
    for (const QString& f : QDir(someRouter).entryList(QDir::Files))
      QVERIFY(QFile::copy(someRouter + "/" + f, routerFolder + "/written-later/" + f));
    w.context()->rescan();
    QCOMPARE(w.context()->paths("router").size(), 2);
    // Every router's tooltip is its summary, not "unreadable: ..." (issue 20 defect 7).
    auto* tree = w.findChild<QTreeWidget*>();
    QVERIFY(tree);
    int routers = 0;
    for (QTreeWidgetItemIterator it(tree); *it; ++it)
      if ((*it)->data(0, Qt::UserRole).toString() == "router") {
        const QString tip = (*it)->toolTip(0);
        qInfo() << "router tooltip:" << tip;
        QVERIFY2(!tip.contains("unreadable"), qPrintable(tip));
        QVERIFY2(tip.contains("router, E="), qPrintable(tip));
        ++routers;
      }
    QCOMPARE(routers, 2);
  }
};

QTEST_MAIN(TestStudioTasks)
#include "test_studio_tasks.moc"
