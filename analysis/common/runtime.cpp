#include "analysis/common/runtime.h"

#include "analysis/common/distributed.h"

#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

namespace moefy {

namespace {
int g_threads = 0;
}

void configureRuntime() {
  if (g_threads > 0) return;
  // Under mpirun the node's cores are shared by its ranks (distributed.h).
  int n = dist::threadsPerRank(static_cast<int>(std::thread::hardware_concurrency()));
  if (const char* env = std::getenv("MOEFY_THREADS")) n = std::atoi(env);
  if (n <= 0) n = 1;
  g_threads = n;
  at::set_num_threads(n);
}

int runtimeThreads() { return g_threads > 0 ? g_threads : 1; }

double physicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size) : 0.0;
}

double availableMemoryBytes() {
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    double kib = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    std::fclose(f);
    if (kib >= 0) return kib * 1024.0;
  }
  return physicalMemoryBytes();
}

std::string byteSize(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

}  // namespace moefy
