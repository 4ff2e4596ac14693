// Printing a child process's output into the test log, and failing a test
// step when a command did not succeed (with its output in the log). Shared by
// the tests that drive `moefy` and the Python references step by step.
#pragma once

#include <QtTest>
#include <string>

#include "testutil.h"

namespace moefy::test {

/// Logs `text` line by line through qInfo (one log entry per line).
inline void printLines(const std::string& text) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    qInfo().noquote() << QString::fromStdString(text.substr(start, end - start));
    start = end + 1;
  }
}

/// Fails the current test function (QVERIFY2, naming `what`) when `r` exited
/// non-zero, after logging its stdout and stderr.
inline void expectOk(const RunResult& r, const char* what) {
  if (r.exitCode != 0) {
    qWarning() << what << "exit" << r.exitCode;
    printLines(r.out);
    printLines(r.err);
  }
  QVERIFY2(r.exitCode == 0, what);
}

}  // namespace moefy::test
