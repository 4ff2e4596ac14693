#pragma once
// Small helpers shared by the benchmark programs (not part of the engine).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace moefy::bench {

/// Monotonic time in seconds (steady_clock), for differences only.
inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// A field of /proc/self/status in MiB ("VmRSS:", "VmHWM:"), -1 if unavailable (not Linux).
inline double statusMiB(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
  return -1;
}

/// Command-line checks of the benchmark programs. Each prints one line
/// "PROG: ..." and the usage to stderr and exits with status 2 on bad input.

/// `text` as a whole integer in [lo, hi] (all of it), for argument `name`.
inline int64_t intArg(const char* prog, const char* usage, const char* name, const char* text, int64_t lo, int64_t hi) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (!*text || *end || v < lo || v > hi) {
    std::fprintf(stderr, "%s: %s must be an integer in [%lld, %lld], got '%s'\n%s", prog, name,
                 static_cast<long long>(lo), static_cast<long long>(hi), text, usage);
    std::exit(2);
  }
  return v;
}

/// `text` as a finite real number in [lo, hi] (all of it), for argument `name`.
inline double realArg(const char* prog, const char* usage, const char* name, const char* text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (!*text || *end || !(v >= lo && v <= hi)) {
    std::fprintf(stderr, "%s: %s must be a number in [%g, %g], got '%s'\n%s", prog, name, lo, hi, text, usage);
    std::exit(2);
  }
  return v;
}

/// argv[i + 1], the value of option argv[i]; exits when it is missing.
inline const char* valueOf(const char* prog, const char* usage, int argc, char** argv, int i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s: %s needs a value\n%s", prog, argv[i], usage);
    std::exit(2);
  }
  return argv[i + 1];
}

/// An argument no branch recognised: exits.
[[noreturn]] inline void badArg(const char* prog, const char* usage, const char* arg) {
  std::fprintf(stderr, "%s: %s %s\n%s", prog, arg[0] == '-' ? "unknown option" : "unexpected argument", arg, usage);
  std::exit(2);
}

/// Runs a benchmark's body; any exception (an allocation the machine cannot
/// make, a refused parameter) becomes one line "PROG: first line of what()"
/// and exit status 1 instead of an abort.
template <typename Body>
int runReportingErrors(const char* prog, Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    std::fprintf(stderr, "%s: %s\n", prog, what.substr(0, what.find('\n')).c_str());
    return 1;
  }
}

/// Whether `arg` asks for the usage (--help or -h).
inline bool isHelp(const char* arg) { return !std::strcmp(arg, "--help") || !std::strcmp(arg, "-h"); }

/// Removes the folder `dir` (if not empty) when it goes out of scope, on any
/// exit path: a benchmark's own temporary folder. Never throws.
struct RemoveOnExit {
  std::filesystem::path dir;
  RemoveOnExit() = default;
  explicit RemoveOnExit(std::filesystem::path d) : dir(std::move(d)) {}
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;
  ~RemoveOnExit() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace moefy::bench
