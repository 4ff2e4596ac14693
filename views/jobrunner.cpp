#include "views/jobrunner.h"

#include <QCoreApplication>
#include <QEventLoop>
#include <QPointer>
#include <QThread>
#include <QTimer>

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
    bool ok = false, cancelled = false;
    QString error;
    try {
      fn(*ctx);
      ok = !ctx->cancelled();
      cancelled = ctx->cancelled();
    } catch (const CancelledError&) {
      cancelled = true;
    } catch (const std::exception& e) {
      error = QString::fromUtf8(e.what());
      if (error.isEmpty()) error = "unknown error";
    } catch (...) {
      error = "unknown error (non-standard exception)";
    }
    if (self)
      QMetaObject::invokeMethod(self, [self, ok, cancelled, error] { if (self) self->onDone(ok, cancelled, error); },
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

}  // namespace moefy::views
