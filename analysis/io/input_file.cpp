#include "analysis/io/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "analysis/common/error.h"

namespace moefy {

namespace {

const char* kindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "is a folder, not a file";
  if (S_ISFIFO(mode)) return "is a FIFO (named pipe), not a regular file";
  if (S_ISSOCK(mode)) return "is a socket, not a regular file";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "is a device, not a regular file";
  return "is not a regular file";
}

}  // namespace

int openInputFile(const std::filesystem::path& path, uint64_t* size) {
  // O_NONBLOCK makes open() return at once for a FIFO without a writer; the
  // type check below then refuses it. O_NOCTTY keeps a terminal device from
  // becoming the controlling terminal.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw IoError(path.string() + ": no such file");
    throw IoError(path.string() + ": cannot open (" + std::strerror(err) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw IoError(path.string() + ": cannot stat (" + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(path.string() + ": " + kindOf(st.st_mode));
  }
  // Regular files never block, but later reads should behave as usual.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (size) *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

void requireInputFile(const std::filesystem::path& path) { ::close(openInputFile(path)); }

std::string readInputFile(const std::filesystem::path& path, uint64_t maxBytes) {
  uint64_t size = 0;
  const int fd = openInputFile(path, &size);
  if (size > maxBytes) {
    ::close(fd);
    throw IoError(path.string() + ": " + std::to_string(size) + " bytes is larger than the " +
                  std::to_string(maxBytes) + " bytes this reader accepts");
  }
  std::string out;
  out.resize(static_cast<size_t>(size));
  size_t done = 0;
  // Read until EOF rather than exactly `size` bytes: the file may shrink or
  // grow while it is read (it is then read as it is at EOF, up to maxBytes).
  while (true) {
    if (done == out.size()) {
      if (out.size() >= maxBytes) {
        ::close(fd);
        throw IoError(path.string() + ": grew past the " + std::to_string(maxBytes) + " bytes this reader accepts");
      }
      out.resize(std::min<uint64_t>(maxBytes, out.size() + 65536));
    }
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw IoError(path.string() + ": read failed (" + std::strerror(err) + ")");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace moefy
