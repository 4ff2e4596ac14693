#include "views/jobrunner.h"

#include <QCoreApplication>
#include <QEventLoop>
#include <QPointer>
#include <QThread>
#include <QTimer>
#include <atomic>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"

namespace moefy::views {

JobRunner::JobRunner(QObject* parent) : QObject(parent) {}

JobRunner::~JobRunner() {
  if (thread_) {
    if (ctx_) ctx_->cancel();
    thread_->wait();
    delete thread_;
  }
}

bool JobRunner::start(const QString& name, Fn fn, Done onSuccess) {
  if (busy_) return false;
  busy_ = true;
  cancelCameLate_ = false;
  name_ = name;
  stage_.clear();
  onSuccess_ = std::move(onSuccess);
  stageTimer_.start();
  QPointer<JobRunner> self(this);
  // The callbacks run on the worker thread; QMetaObject::invokeMethod with a
  // functor and Qt::QueuedConnection hands them to this object's (GUI) thread.
  auto ctx = std::make_shared<JobContext>(
      [self](const std::string& stage, double f) {
        QString s = QString::fromStdString(stage);
        if (self) QMetaObject::invokeMethod(self, [self, s, f] { if (self) self->onProgress(s, f); }, Qt::QueuedConnection);
      },
      [self](const std::string& line) {
        QString l = QString::fromStdString(line);
        if (self) QMetaObject::invokeMethod(self, [self, l] { if (self) Q_EMIT self->logLine(l); }, Qt::QueuedConnection);
      });
  ctx_ = ctx;
  if (thread_) {
    thread_->wait();
    delete thread_;
    thread_ = nullptr;
  }
  thread_ = QThread::create([self, ctx, fn = std::move(fn)] {
    bool ok = false, cancelled = false, late = false;
    QString error;
    try {
      fn(*ctx);
      // The function returned: its work (an atomic write) is complete, even if
      // a cancel arrived after its last checkCancel(). Report what is on disk.
      ok = true;
      late = ctx->cancelled();
    } catch (const CancelledError&) {
      cancelled = true;
    } catch (const std::exception& e) {
      error = QString::fromUtf8(e.what());
      if (error.isEmpty()) error = "unknown error";
    } catch (...) {
      error = "unknown error (non-standard exception)";
    }
    if (self)
      QMetaObject::invokeMethod(
          self,
          [self, ok, cancelled, late, error] {
            if (!self) return;
            self->cancelCameLate_ = late;
            self->onDone(ok, cancelled, error);
          },
          Qt::QueuedConnection);
  });
  thread_->setObjectName("moefy-job");
  Q_EMIT started(name);
  thread_->start(QThread::LowPriority);
  return true;
}

void JobRunner::cancel() {
  if (ctx_) ctx_->cancel();
}

bool JobRunner::wait(int ms) {
  QElapsedTimer t;
  t.start();
  while (busy_ && t.elapsed() < ms) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
  return !busy_;
}

void JobRunner::onProgress(const QString& stage, double fraction) {
  if (stage != stage_) {
    stage_ = stage;
    stageTimer_.restart();
  }
  double eta = -1;
  double el = stageTimer_.elapsed() / 1000.0;
  if (fraction > 0.02 && el > 0.5) eta = el * (1.0 - fraction) / fraction;
  Q_EMIT progress(stage, fraction, eta);
}

void JobRunner::onDone(bool ok, bool cancelled, const QString& error) {
  if (thread_) {
    thread_->wait();
    delete thread_;
    thread_ = nullptr;
  }
  busy_ = false;
  ctx_.reset();
  QString name = name_;
  Done done = std::move(onSuccess_);
  onSuccess_ = {};
  if (ok && done) {
    try {
      done();
    } catch (const std::exception& e) {
      Q_EMIT finished(name, false, false, QString::fromUtf8(e.what()));
      return;
    }
  }
  Q_EMIT finished(name, ok, cancelled, error);
}

// ---------------------------------------------------------------- TaskRunner

namespace {
std::atomic<int> gLiveTaskThreads{0};
}

struct TaskRunner::Task {
  quint64 id = 0;
  QString key;
  QPointer<QObject> owner;
  bool hadOwner = false;
  std::shared_ptr<JobContext> ctx;
  QThread* thread = nullptr;
  OnError onError;
};

TaskRunner::TaskRunner(QObject* parent) : QObject(parent) {}

TaskRunner::~TaskRunner() { shutdown(); }

int TaskRunner::liveThreads() { return gLiveTaskThreads.load(); }

quint64 TaskRunner::run(const QString& key, QObject* owner, Work work, OnError onError) {
  if (shutDown_) return 0;
  cancel(key);  // superseded: the older task's result will be dropped
  auto task = std::make_shared<Task>();
  task->id = nextId_++;
  task->key = key;
  task->owner = owner;
  task->hadOwner = owner != nullptr;
  task->ctx = std::make_shared<JobContext>();
  task->onError = std::move(onError);
  tasks_[task->id] = task;
  current_[key] = task->id;
  QPointer<TaskRunner> self(this);
  const quint64 id = task->id;
  auto ctx = task->ctx;
  gLiveTaskThreads.fetch_add(1);
  task->thread = QThread::create([self, id, ctx, work = std::move(work)] {
    std::function<void()> apply;
    bool ok = false, cancelled = false;
    QString error;
    try {
      apply = work(*ctx);
      cancelled = ctx->cancelled();
      ok = !cancelled;
    } catch (const CancelledError&) {
      cancelled = true;
    } catch (const std::exception& e) {
      error = QString::fromUtf8(e.what());
      if (error.isEmpty()) error = "unknown error";
    } catch (...) {
      error = "unknown error (non-standard exception)";
    }
    // The runner outlives its threads (shutdown() joins them), so `self` is
    // valid here unless shutdown already ran, in which case the queued call
    // is dropped with the runner.
    if (self)
      QMetaObject::invokeMethod(
          self,
          [self, id, ok, cancelled, error, apply = std::move(apply)]() mutable {
            if (self) self->finish(id, ok, cancelled, error, std::move(apply));
          },
          Qt::QueuedConnection);
    gLiveTaskThreads.fetch_sub(1);
  });
  task->thread->setObjectName("moefy-task");
  task->thread->start(QThread::LowPriority);
  return id;
}

void TaskRunner::finish(quint64 id, bool ok, bool cancelled, const QString& error, std::function<void()> apply) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;  // joined by shutdown() already
  std::shared_ptr<Task> task = it->second;
  tasks_.erase(it);
  task->thread->wait();
  delete task->thread;
  task->thread = nullptr;
  auto cur = current_.find(task->key);
  const bool current = cur != current_.end() && cur->second == id;
  if (current) current_.erase(cur);
  const bool ownerGone = task->hadOwner && !task->owner;
  if (!current || ownerGone || task->ctx->cancelled()) {
    Q_EMIT taskFinished(task->key, false, true, QString());
    return;
  }
  if (!error.isEmpty()) {
    if (task->onError) task->onError(error);
    Q_EMIT taskFinished(task->key, false, false, error);
    return;
  }
  if (ok && apply) {
    try {
      apply();
    } catch (const std::exception& e) {
      const QString msg = QString::fromUtf8(e.what());
      if (task->onError) task->onError(msg);
      Q_EMIT taskFinished(task->key, false, false, msg);
      return;
    }
  }
  Q_EMIT taskFinished(task->key, ok, cancelled, QString());
}

void TaskRunner::cancel(const QString& key) {
  auto cur = current_.find(key);
  if (cur == current_.end()) return;
  auto it = tasks_.find(cur->second);
  if (it != tasks_.end()) it->second->ctx->cancel();
  current_.erase(cur);
}

void TaskRunner::cancelAll() {
  for (auto& [id, t] : tasks_) t->ctx->cancel();
  current_.clear();
}

void TaskRunner::shutdown() {
  shutDown_ = true;
  cancelAll();
  for (auto& [id, t] : tasks_) {
    if (!t->thread) continue;
    t->thread->wait();
    delete t->thread;
    t->thread = nullptr;
  }
  tasks_.clear();
}

bool TaskRunner::isRunning(const QString& key) const { return current_.count(key) > 0; }

bool TaskRunner::wait(int ms) {
  QElapsedTimer t;
  t.start();
  while (!tasks_.empty() && t.elapsed() < ms) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
  return tasks_.empty();
}

}  // namespace moefy::views
