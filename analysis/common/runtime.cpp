#include "analysis/common/runtime.h"

#include <torch/torch.h>

#include <cstdlib>
#include <thread>

namespace moefy {

namespace {
int g_threads = 0;
}

void configureRuntime() {
  if (g_threads > 0) return;
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("MOEFY_THREADS")) n = std::atoi(env);
  if (n <= 0) n = 1;
  g_threads = n;
  at::set_num_threads(n);
}

int runtimeThreads() { return g_threads > 0 ? g_threads : 1; }

}  // namespace moefy
