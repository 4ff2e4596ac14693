#pragma once
// Opening untrusted input files safely. Every reader of the core goes through
// these (directly, or through readFile() / SafetensorsFile::open()), so that a
// FIFO, socket, device or folder given where a file is expected is refused
// with a one-line error instead of blocking forever or being "malformed".
//
// Free of libtorch: the libFuzzer targets link this file alone.
#include <cstdint>
#include <filesystem>
#include <string>

namespace moefy {

/// Opens `path` read-only after checking that it is a regular file
/// (symlinks are followed). The open itself uses O_NONBLOCK, so a FIFO never
/// blocks; the flag is cleared again before returning. Returns the file
/// descriptor (the caller closes it) and stores the file size in `*size` when
/// given. Throws IoError naming the path: "no such file", "is a folder, not a
/// file", "is a FIFO/socket/device, not a regular file", or the OS error.
/// Thread-safe.
int openInputFile(const std::filesystem::path& path, uint64_t* size = nullptr);

/// Throws IoError (as openInputFile) unless `path` is a regular file. For
/// readers that must open the file with another API (std::ifstream).
void requireInputFile(const std::filesystem::path& path);

/// Reads a whole input file (checked as by openInputFile). Files larger than
/// `maxBytes` are refused with an IoError naming the path and both sizes.
/// Thread-safe.
std::string readInputFile(const std::filesystem::path& path, uint64_t maxBytes = 4ull << 30);

}  // namespace moefy
