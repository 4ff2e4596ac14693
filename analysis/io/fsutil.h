#pragma once
// Atomic file and folder writes. A write goes to a temporary sibling
// ("NAME.tmp-XXXX"), is flushed, and is renamed over the target only when
// complete, so readers never see a half-written artefact and a failed or
// cancelled job leaves nothing behind.
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace moefy {

namespace fs = std::filesystem;

/// Writes `bytes` to `path` atomically. Throws IoError naming the path.
void writeFileAtomic(const fs::path& path, std::string_view bytes);

/// Streams into a temporary file through `writer`, fsyncs and renames it to
/// `path`. If `writer` throws, the temporary is removed and the error rethrown.
void writeFileAtomic(const fs::path& path, const std::function<void(std::FILE*)>& writer);

/// Builds a folder atomically: `build` fills a fresh temporary folder next to
/// `target`; on success the temporary replaces `target` (which must not exist
/// unless `force`). On any exception the temporary folder is removed.
void writeFolderAtomic(const fs::path& target, bool force,
                       const std::function<void(const fs::path& tmpDir)>& build);

/// Reads a whole (small) file. Throws IoError naming the path.
std::string readFile(const fs::path& path);

/// fwrite that throws IoError (naming `what`) on a short write, e.g. full disk.
void writeAll(std::FILE* f, const void* data, size_t size, const std::string& what);

}  // namespace moefy
