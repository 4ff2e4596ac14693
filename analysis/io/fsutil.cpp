#include "analysis/io/fsutil.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"

namespace moefy {

namespace {

std::string tempSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream s;
  s << ".tmp-" << std::hex << (rng() & 0xffffffffu);
  return s.str();
}

fs::path absoluteOf(const fs::path& p) {
  std::error_code ec;
  fs::path a = fs::absolute(p, ec);
  if (ec) a = p;
  a = a.lexically_normal();
  // "out/" names the folder "out": drop the empty last component.
  if (a.has_parent_path() && a.filename().empty()) a = a.parent_path();
  return a;
}

// The identity used to compare a target with the inputs: symlinks of the
// parent folders resolved, the last component kept as named.
fs::path canonicalOf(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(absoluteOf(p), ec);
  return ec ? absoluteOf(p) : c;
}

bool isWithin(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

void fsyncDir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);  // best effort: some file systems refuse fsync on folders
  ::close(fd);
}

nlohmann::json readSmallJson(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return nullptr;
  const auto size = fs::file_size(p, ec);
  if (ec || size > (16u << 20)) return nullptr;
  std::ifstream in(p, std::ios::binary);
  if (!in) return nullptr;
  std::ostringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str(), nullptr, false);
}

std::string article(const std::string& kind) {
  if (kind.empty()) return kind;
  const char c = kind[0];
  const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' || kind.rfind("MoE", 0) == 0;
  return (vowel ? "an " : "a ") + kind;
}

// Processes of this run that hold an OutputLock, by target (re-entrancy).
std::mutex g_locksMutex;
std::map<std::string, int>& heldLocks() {
  static std::map<std::string, int> held;
  return held;
}

bool startsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// Under the lock of `target`: put back an artefact that an interrupted
// two-rename replacement left as TARGET.tmp-*.old, then delete every other
// temporary of TARGET (left by a killed run; nobody else can be writing it).
void recoverAndClean(const fs::path& target) {
  const fs::path parent = target.parent_path();
  const std::string prefix = target.filename().string() + ".tmp-";
  std::error_code ec;
  std::vector<fs::path> temps, olds;
  for (auto it = fs::directory_iterator(parent.empty() ? fs::path(".") : parent, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!startsWith(name, prefix)) continue;
    const bool old = name.size() > 4 && name.compare(name.size() - 4, 4, ".old") == 0;
    (old ? olds : temps).push_back(it->path());
  }
  if (!fs::exists(fs::symlink_status(target, ec)) && !olds.empty()) {
    // The newest aside copy is the artefact that was being replaced.
    std::sort(olds.begin(), olds.end(), [](const fs::path& a, const fs::path& b) {
      std::error_code e1, e2;
      return fs::last_write_time(a, e1) > fs::last_write_time(b, e2);
    });
    fs::rename(olds.front(), target, ec);
    if (!ec) {
      std::fprintf(stderr, "%s: restored the previous artefact from %s (an earlier replacement was interrupted)\n",
                   target.string().c_str(), olds.front().filename().string().c_str());
      olds.erase(olds.begin());
      fsyncDir(parent);
    }
  }
  for (const auto& v : {temps, olds})
    for (const auto& p : v) fs::remove_all(p, ec);
}

}  // namespace

void ignoreFileSizeSignal() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGXFSZ, SIG_IGN); });
}

void writeAll(std::FILE* f, const void* data, size_t size, const std::string& what) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, f) != size)
    throw IoError(what + ": write failed (" + std::strerror(errno) + ")");
}

void writeFileAtomic(const fs::path& path, const std::function<void(std::FILE*)>& writer) {
  ignoreFileSizeSignal();
  fs::path tmp = path;
  tmp += tempSuffix();
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw IoError(path.string() + ": cannot write (" + std::strerror(errno) + ")");
  try {
    writer(f);
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0)
      throw IoError(path.string() + ": write failed (" + std::strerror(errno) + ")");
  } catch (...) {
    std::fclose(f);
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::error_code ec;
    fs::remove(tmp, ec);
    throw IoError(path.string() + ": write failed (" + std::strerror(err) + ")");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove(tmp, ec2);
    throw IoError(path.string() + ": cannot rename temporary file into place (" + ec.message() + ")");
  }
}

void writeFileAtomic(const fs::path& path, std::string_view bytes) {
  writeFileAtomic(path, [&](std::FILE* f) { writeAll(f, bytes.data(), bytes.size(), path.string()); });
}

std::string artefactKindOf(const fs::path& p) {
  std::error_code ec;
  const fs::file_status ls = fs::symlink_status(p, ec);
  if (ec || !fs::exists(ls)) return "";
  if (!fs::is_directory(fs::status(p, ec))) return "plain file";
  if (fs::is_empty(p, ec) && !ec) return "empty folder";
  auto has = [&](const char* name) {
    std::error_code e;
    return fs::exists(p / name, e);
  };
  if (has("manifest.json")) {
    const nlohmann::json m = readSmallJson(p / "manifest.json");
    if (m.is_object() && m.value("format", std::string()) == "moefy-recording")
      return m.value("complete", true) ? "recording" : "recording checkpoint";
  }
  if (has("partition.json")) return "partition";
  if (has("router.json")) return "router";
  if (has("eval.json")) return "evaluation";
  if (has("analysis.json")) {
    const nlohmann::json a = readSmallJson(p / "analysis.json");
    if (a.is_object() && a.value("format", std::string()) == "moefy-moe-analysis") return "MoE analysis";
  }
  if (has("state.json")) {
    const nlohmann::json s = readSmallJson(p / "state.json");
    if (s.is_object() && s.value("format", std::string()) == "moefy-train-checkpoint") return "training checkpoint";
  }
  if (has("config.json")) {
    const nlohmann::json c = readSmallJson(p / "config.json");
    if (c.is_object() && c.contains("moefication")) return "MoE export";
    if (has("training.json")) return "trained model";
    return "model folder";
  }
  if (has("front.json")) return "front";
  if (has("report.html") && has("recording")) return "demo";
  if (has("report.html") || has("report.md")) return "report";
  return "folder";
}

void checkOutput(const fs::path& target, bool force, const std::string& kind, const std::vector<fs::path>& inputs) {
  // Inputs first: an output inside (or around) an input is refused even when it does not exist yet.
  const fs::path t = canonicalOf(target);
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    const fs::path i = canonicalOf(in);
    if (isWithin(i, t) || isWithin(t, i))
      throw IoError(target.string() + ": is " + (isWithin(t, i) && t != i ? "inside " : "") + "an input of this command (" +
                    in.string() + "); refusing to replace it (choose another --out)");
  }
  const std::string have = artefactKindOf(target);
  if (have.empty() || have == "empty folder") return;
  if (have != kind)
    throw IoError(target.string() + ": is " + article(have) + ", not " + article(kind) +
                  "; refusing to replace it (choose another --out)");
  if (!force) throw IoError(target.string() + ": already exists (use --force to replace it)");
}

OutputLock::OutputLock(const fs::path& target) {
  const fs::path abs = absoluteOf(target);
  key_ = canonicalOf(target);
  {
    std::lock_guard<std::mutex> g(g_locksMutex);
    auto it = heldLocks().find(key_.string());
    if (it != heldLocks().end()) {
      ++it->second;  // nested: the outer holder already did the work
      return;
    }
  }
  std::error_code ec;
  const fs::path parent = abs.parent_path();
  if (!parent.empty() && !fs::exists(parent, ec)) {
    fs::create_directories(parent, ec);
    if (ec) throw IoError(parent.string() + ": cannot create folder (" + ec.message() + ")");
  }
  lockPath_ = abs;
  lockPath_ += ".lock";
  for (int attempt = 0;; ++attempt) {
    fd_ = ::open(lockPath_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0)
      throw IoError(target.string() + ": cannot create the lock file " + lockPath_.string() + " (" +
                    std::strerror(errno) + ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd_);
      fd_ = -1;
      if (err == EWOULDBLOCK)
        throw IoError(target.string() + ": another moefy process is writing it (" + lockPath_.string() +
                      " is locked); wait for it to finish");
      throw IoError(target.string() + ": cannot lock " + lockPath_.string() + " (" + std::strerror(err) + ")");
    }
    // A previous holder unlinks the file when done; make sure we locked the
    // file that is still at the path, else two processes could both "hold" it.
    struct stat a{}, b{};
    if (::fstat(fd_, &a) == 0 && ::stat(lockPath_.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      break;
    ::close(fd_);
    fd_ = -1;
    if (attempt > 100) throw IoError(target.string() + ": cannot lock " + lockPath_.string());
  }
  {
    std::lock_guard<std::mutex> g(g_locksMutex);
    heldLocks()[key_.string()] = 1;
  }
  recoverAndClean(abs);
}

OutputLock::~OutputLock() {
  std::lock_guard<std::mutex> g(g_locksMutex);
  auto it = heldLocks().find(key_.string());
  if (it == heldLocks().end()) return;
  if (--it->second > 0) return;
  heldLocks().erase(it);
  if (fd_ >= 0) {
    ::unlink(lockPath_.c_str());  // while still locked: see the inode check above
    ::close(fd_);
  }
}

void replaceFolder(const fs::path& src, const fs::path& target, bool force, const std::vector<fs::path>& inputs) {
  const fs::path absTarget = absoluteOf(target);
  checkOutput(target, force, artefactKindOf(src), inputs);
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(absTarget, ec);
  if (fs::exists(st) && fs::is_directory(st) && fs::is_empty(absTarget, ec)) {
    fs::remove(absTarget, ec);  // an empty folder holds nothing to keep
    if (ec) throw IoError(target.string() + ": cannot replace the empty folder (" + ec.message() + ")");
  }
  if (!fs::exists(fs::symlink_status(absTarget, ec))) {
    if (::renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, absTarget.c_str(), RENAME_NOREPLACE) != 0) {
      const int err = errno;
      if ((err != EINVAL && err != ENOSYS) || ::rename(src.c_str(), absTarget.c_str()) != 0)
        throw IoError(target.string() + ": cannot move output folder into place (" + std::strerror(err) + ")");
    }
    fsyncDir(absTarget.parent_path());
    return;
  }
  // One atomic swap: TARGET is the old artefact before it and the new one
  // after it; `src` then holds the old one, deleted below (or, after a kill,
  // by the next run's recoverAndClean as a stale temporary).
  if (::renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, absTarget.c_str(), RENAME_EXCHANGE) == 0) {
    fsyncDir(absTarget.parent_path());
    fs::remove_all(src, ec);
    return;
  }
  const int err = errno;
  if (err != EINVAL && err != ENOSYS)
    throw IoError(target.string() + ": cannot replace existing folder (" + std::strerror(err) + ")");
  // File systems without RENAME_EXCHANGE: two renames; the next run restores
  // TARGET from the ".old" copy if a kill lands between them.
  fs::path old = absTarget;
  old += tempSuffix() + ".old";
  fs::rename(absTarget, old, ec);
  if (ec) throw IoError(target.string() + ": cannot replace existing folder (" + ec.message() + ")");
  fs::rename(src, absTarget, ec);
  if (ec) {
    std::error_code ec2;
    fs::rename(old, absTarget, ec2);
    throw IoError(target.string() + ": cannot move output folder into place (" + ec.message() + ")");
  }
  fsyncDir(absTarget.parent_path());
  fs::remove_all(old, ec);
}

void writeFolderAtomic(const fs::path& target, bool force, const std::function<void(const fs::path& tmpDir)>& build,
                       const std::vector<fs::path>& inputs) {
  ignoreFileSizeSignal();
  const fs::path absTarget = absoluteOf(target);
  OutputLock lock(absTarget);
  // What can be refused before the work: anything that is not an artefact,
  // an input, or (without --force) anything at all.
  const std::string have = artefactKindOf(absTarget);
  if (have == "plain file" || have == "folder") checkOutput(target, force, "artefact", inputs);
  if (!have.empty() && have != "empty folder") checkOutput(target, force, have, inputs);
  fs::path tmp = absTarget;
  tmp += tempSuffix();
  std::error_code ec;
  fs::create_directory(tmp, ec);
  if (ec) throw IoError(target.string() + ": cannot create output folder (" + ec.message() + ")");
  try {
    build(tmp);
    replaceFolder(tmp, target, force, inputs);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

std::string readFile(const fs::path& path) {
  // Regular files only, opened without blocking (analysis/io/input_file.h).
  return readInputFile(path);
}

}  // namespace moefy
