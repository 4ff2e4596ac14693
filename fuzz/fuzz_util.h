#pragma once
// Shared by the fuzz targets: what counts as a finding. A reader may accept
// an input or refuse it with a moefy::Error (one line, naming the source);
// any other exception, a crash, a hang or a leak is a finding.
#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "analysis/common/error.h"

namespace fuzzutil {

/// Calls `fn`; moefy::Error is the expected refusal. Its message must be one
/// line and start with `where` (the message names the file). Anything else
/// aborts, which libFuzzer and the regression driver report.
template <typename Fn>
void expectCleanRefusal(const std::string& where, Fn&& fn) {
  try {
    fn();
  } catch (const moefy::Error& e) {
    const std::string m = e.what();
    if (m.find('\n') != std::string::npos || m.rfind(where, 0) != 0) {
      std::fprintf(stderr, "bad error message: %s\n", m.c_str());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "escaped exception (not moefy::Error): %s\n", e.what());
    std::abort();
  }
}

/// A per-process scratch file for readers that take a path.
inline std::filesystem::path scratchFile(const char* name) {
  return std::filesystem::temp_directory_path() / ("moefy-fuzz-" + std::to_string(::getpid())) / name;
}

/// Writes `data` to `path` (creating its folder).
inline void writeScratch(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::filesystem::create_directories(path.parent_path());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace fuzzutil
