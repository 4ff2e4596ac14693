#pragma once
// Small helpers shared by the benchmark programs (not part of the engine).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

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

}  // namespace moefy::bench
