#pragma once
// Atomic file and folder writes. A write goes to a temporary sibling
// ("NAME.tmp-XXXX"), is flushed, and is renamed over the target only when
// complete, so readers never see a half-written artefact and a failed or
// cancelled job leaves nothing behind.
//
// Replacing an artefact (--force) is one atomic exchange of the two folders
// (Linux renameat2 RENAME_EXCHANGE), so at every instant the target is either
// the old or the new artefact. --force only replaces an artefact of the kind
// being written, never a plain file, another kind's folder, a non-empty folder
// of unknown content, or one of the job's inputs.
//
// A process writing the output OUT holds an exclusive lock (flock on
// "OUT.lock", removed when released), so two jobs never write the same output
// at once (e.g. two `record --resume` of one checkpoint). Under that lock,
// temporaries left by a killed run of the same output ("OUT.tmp-*") are stale
// and are removed, and an artefact moved aside by an interrupted replacement of
// an older version ("OUT.tmp-*.old" with OUT missing) is put back.
//
// SIGXFSZ (file size limit, `ulimit -f`) is ignored once the first atomic
// write starts, so an oversized write fails with EFBIG like a full disk:
// IoError, temporary removed.
#include <sys/types.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace moefy {

namespace fs = std::filesystem;

/// Writes `bytes` to `path` atomically. Throws IoError naming the path.
void writeFileAtomic(const fs::path& path, std::string_view bytes);

/// Streams into a temporary file through `writer`, fsyncs and renames it to
/// `path`. If `writer` throws, the temporary is removed and the error rethrown.
void writeFileAtomic(const fs::path& path, const std::function<void(std::FILE*)>& writer);

/// What `p` holds, named for messages and for the --force rule: "" (nothing
/// there), "empty folder", "plain file", "recording", "recording checkpoint",
/// "partition", "router", "evaluation", "MoE analysis", "MoE export", "trained model",
/// "model folder", "training checkpoint", "front" (moefy front), "demo", "report", or "folder"
/// (non-empty, none of these). Detected by each kind's metadata file
/// (docs/formats.md). Never throws; does not follow a final symlink for the
/// "plain file" test (a link is reported as "plain file" unless it points at
/// a folder).
std::string artefactKindOf(const fs::path& p);

/// Throws IoError (one line naming `target`) unless an artefact of `kind`
/// (a name from artefactKindOf) may be written at `target`: nothing there; an
/// empty folder; or, with `force`, an artefact of the same kind that is not
/// one of `inputs` (nor inside one, nor containing one). Cheap; call it
/// before a long job so that a refused output costs no work.
void checkOutput(const fs::path& target, bool force, const std::string& kind, const std::vector<fs::path>& inputs = {});

/// Exclusive lock on writing the output `target` for the lifetime of the
/// object (flock on the sibling "TARGET.lock", created and removed by the
/// holder). Re-entrant within a process: a nested lock of the same target is
/// a no-op. On acquiring it, recovers an interrupted replacement and removes
/// stale temporaries of `target` (see the file comment). Throws IoError naming
/// the target when another process holds it. Not thread-safe across threads of
/// one process for the same target (jobs own distinct outputs).
class OutputLock {
 public:
  explicit OutputLock(const fs::path& target);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  fs::path key_, lockPath_;
  int fd_ = -1;
};

/// Builds a folder atomically: takes the OutputLock of `target`, checks it
/// with checkOutput (the kind is that of what `build` produced), `build` fills
/// a fresh temporary folder next to `target`, and on success the temporary
/// replaces `target` in one atomic exchange (the old artefact is then
/// deleted). On any exception the temporary folder is removed and `target`
/// is untouched. Throws IoError naming the target.
void writeFolderAtomic(const fs::path& target, bool force, const std::function<void(const fs::path& tmpDir)>& build,
                       const std::vector<fs::path>& inputs = {});

/// Moves the finished folder `src` (a sibling of `target` on the same file
/// system) into place at `target` atomically, replacing an existing `target`
/// only as checkOutput allows (the kind is that of `src`). The old artefact is
/// deleted after the exchange. Throws IoError; on error `src` is kept.
void replaceFolder(const fs::path& src, const fs::path& target, bool force, const std::vector<fs::path>& inputs = {});

/// Reads a whole (small) file. Throws IoError naming the path (also when it
/// is a folder or not a regular file, checked before opening).
std::string readFile(const fs::path& path);

/// fwrite that throws IoError (naming `what`) on a short write, e.g. full disk.
void writeAll(std::FILE* f, const void* data, size_t size, const std::string& what);

/// Ignores SIGXFSZ for the process (idempotent), so that exceeding the file
/// size limit is an EFBIG write error instead of a kill. Called by every
/// atomic write; exposed for writers that append (logs).
void ignoreFileSizeSignal();

}  // namespace moefy
