#pragma once
// Helpers for GUI tests that drive a MainWindow over the synthetic workspace
// (gui_fixture.h fakeWorkspace). Header-only; include after gui_fixture.h.
#include <QDir>
#include <QFile>
#include <QStandardPaths>
#include <QString>
#include <QTemporaryDir>

#include "gui_fixture.h"
#include "views/artefacts.h"
#include "views/mainwindow.h"

namespace moefy::test {

/// The first view of type T among the window's tabs (nullptr if none).
template <typename T>
T* studioView(views::MainWindow& w) {
  for (QWidget* v : w.views())
    if (auto* t = qobject_cast<T*>(v)) return t;
  return nullptr;
}

/// Test mode for QSettings and app data, and the shared synthetic workspace
/// (built once per build tree). Empty on failure (*error set).
inline QString studioTestWorkspace(QString* error) {
  QStandardPaths::setTestModeEnabled(true);
  return fakeWorkspace(error);
}

/// A private workspace in tmp/ws: a copy of `shared`'s workspace.json whose
/// model and corpus point at the shared ones and whose artefact folders are
/// its own (empty), so artefacts a test writes stay out of other tests.
/// Empty on failure.
inline QString privateStudioWorkspace(const QString& shared, QTemporaryDir& tmp) {
  const QString ws = tmp.filePath("ws");
  if (!QDir().mkpath(ws) || !QFile::copy(shared + "/workspace.json", ws + "/workspace.json")) return {};
  views::Workspace w = views::Workspace::load(ws);
  w.modelPath = shared + "/model";
  w.corpusPath = shared + "/corpus";
  w.save();
  return ws;
}

}  // namespace moefy::test
