#include "analysis/io/fsutil.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
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

}  // namespace

void writeAll(std::FILE* f, const void* data, size_t size, const std::string& what) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, f) != size)
    throw IoError(what + ": write failed (" + std::strerror(errno) + ")");
}

void writeFileAtomic(const fs::path& path, const std::function<void(std::FILE*)>& writer) {
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
    std::error_code ec;
    fs::remove(tmp, ec);
    throw IoError(path.string() + ": write failed (" + std::strerror(errno) + ")");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError(path.string() + ": cannot rename temporary file into place (" + ec.message() + ")");
  }
}

void writeFileAtomic(const fs::path& path, std::string_view bytes) {
  writeFileAtomic(path, [&](std::FILE* f) { writeAll(f, bytes.data(), bytes.size(), path.string()); });
}

void writeFolderAtomic(const fs::path& target, bool force,
                       const std::function<void(const fs::path& tmpDir)>& build) {
  std::error_code ec;
  fs::path absTarget = fs::absolute(target, ec);
  if (ec) absTarget = target;
  if (fs::exists(absTarget) && !force)
    throw IoError(target.string() + ": already exists (use --force to replace it)");
  fs::path parent = absTarget.parent_path();
  if (!parent.empty() && !fs::exists(parent)) {
    fs::create_directories(parent, ec);
    if (ec) throw IoError(parent.string() + ": cannot create folder (" + ec.message() + ")");
  }
  fs::path tmp = absTarget;
  tmp += tempSuffix();
  fs::create_directory(tmp, ec);
  if (ec) throw IoError(target.string() + ": cannot create output folder (" + ec.message() + ")");
  try {
    build(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::path old;
  if (fs::exists(absTarget)) {
    old = absTarget;
    old += tempSuffix() + ".old";
    fs::rename(absTarget, old, ec);
    if (ec) {
      fs::remove_all(tmp, ec);
      throw IoError(target.string() + ": cannot replace existing folder (" + ec.message() + ")");
    }
  }
  fs::rename(tmp, absTarget, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    if (!old.empty()) fs::rename(old, absTarget, ec2);
    throw IoError(target.string() + ": cannot move output folder into place (" + ec.message() + ")");
  }
  if (!old.empty()) fs::remove_all(old, ec);
}

std::string readFile(const fs::path& path) {
  // Regular files only, opened without blocking (analysis/io/input_file.h).
  return readInputFile(path);
}

}  // namespace moefy
