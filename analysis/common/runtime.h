#pragma once
// Process-wide runtime settings for the engine.
namespace moefy {
/// Sets torch's intra-op thread count to the machine's cores (or
/// MOEFY_THREADS), since libtorch's default here was 1 on a 2-core machine.
/// Idempotent; call once at program start.
void configureRuntime();
/// The thread count configureRuntime() chose.
int runtimeThreads();
}  // namespace moefy
