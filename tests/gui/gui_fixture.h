#pragma once
// Shared fixture for the GUI tests and the stall benchmark: a synthetic
// workspace (scripts/gui/make_fake_workspace.py) and a real core job.
// Header-only: included by one test executable / the benchmark each.
#include <ATen/ATen.h>

#include <QDir>
#include <QFileInfo>
#include <QProcess>
#include <QString>
#include <filesystem>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"

namespace moefy::test {

inline QString sourceRoot() {
  QByteArray s = qgetenv("MOEFY_SOURCE_DIR");
  return s.isEmpty() ? QStringLiteral(MOEFY_SOURCE_DIR) : QString::fromLocal8Bit(s);
}

/// Builds (once per build tree) the synthetic workspace and returns its folder.
/// Empty on failure (*error set).
inline QString fakeWorkspace(QString* error) {
  QByteArray b = qgetenv("MOEFY_BINARY_DIR");
#ifdef MOEFY_TEST_BINARY_DIR
  const QString fallback = QStringLiteral(MOEFY_TEST_BINARY_DIR);  // the build tree, never the repository
#else
  const QString fallback = QDir::currentPath();
#endif
  QString bin = b.isEmpty() ? fallback : QString::fromLocal8Bit(b);
  QString dir = bin + "/test-tmp/gui-fake-workspace-v5";
  if (QFileInfo::exists(dir + "/model/tokenizer.json") &&
      QFileInfo::exists(dir + "/evaluations/eval-coact/eval.json") &&
      QFileInfo::exists(dir + "/fronts/front-coact/front.json") &&
      QFileInfo::exists(dir + "/analyses/analysis-fake/analysis.json"))
    return dir;
  QDir(dir).removeRecursively();
  QProcess p;
  p.start(QFileInfo::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3",
          {sourceRoot() + "/scripts/gui/make_fake_workspace.py", dir, "--tokens", "1500"});
  if (!p.waitForFinished(120000) || p.exitCode() != 0) {
    if (error) *error = "make_fake_workspace.py failed: " + QString::fromUtf8(p.readAllStandardError());
    return {};
  }
  return dir;
}

/// A real core job: loads `modelDir` with the engine, runs `batches` forward
/// passes of random token batches with progress and cancel checks, and writes
/// the mean final hidden state to OUT/hidden.safetensors atomically (nothing is
/// left on cancel).
inline void forwardJob(const std::filesystem::path& modelDir, const std::filesystem::path& out, int batches,
                       moefy::JobContext& job) {
  job.setStage("load model");
  auto model = Model::load(modelDir);
  const int vocab = model->config().vocab;
  job.setStage("forward");
  at::manual_seed(0);
  writeFolderAtomic(out, true, [&](const std::filesystem::path& tmp) {
    at::Tensor acc;  // [d_model]
    for (int b = 0; b < batches; ++b) {
      job.checkCancel();
      Batch batch;
      batch.ids = at::randint(vocab, {8, 64}, at::kLong);
      batch.mask = at::ones({8, 64}, at::kLong);
      at::Tensor h = model->forwardHidden(batch).mean(0).mean(0);  // [d_model]
      acc = acc.defined() ? acc + h : h;
      job.setProgress((b + 1.0) / batches);
    }
    job.checkCancel();
    writeSafetensors(tmp / "hidden.safetensors", {{"mean_hidden", acc / batches}});
  });
}

}  // namespace moefy::test
