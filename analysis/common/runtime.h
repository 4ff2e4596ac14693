#pragma once
// Process-wide runtime settings for the engine.
#include <string>

namespace moefy {
/// Sets torch's intra-op thread count to the machine's cores (or
/// MOEFY_THREADS), since libtorch's default here was 1 on a 2-core machine.
/// Idempotent; call once at program start.
void configureRuntime();
/// The thread count configureRuntime() chose.
int runtimeThreads();
/// Physical memory of the machine in bytes (sysconf), 0 if unknown. Used to
/// refuse a job whose estimated allocation cannot fit, before allocating.
double physicalMemoryBytes();
/// Memory the kernel says can be allocated without swapping (MemAvailable
/// of /proc/meminfo: free memory plus reclaimable page cache), in bytes; falls
/// back to physicalMemoryBytes() where /proc/meminfo is unreadable. Read anew
/// on each call. Thread-safe.
double availableMemoryBytes();
/// "12.3 GiB"-style text for a byte count.
std::string byteSize(double bytes);
}  // namespace moefy
