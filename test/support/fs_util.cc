#include "test/support/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <random>
#include <utility>

#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "fmt/format.h"

namespace test_support {
namespace {

bool IsAtOrBelow(std::string_view path, std::string_view dir) {
  if (path == dir) return true;
  if (dir == "/") return true;
  return path.size() > dir.size() && path.substr(0, dir.size()) == dir &&
         path[dir.size()] == '/';
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string DecodeMountinfoPath(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
        s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Removes the contents of the directory open as `dfd` (which lives on `dev`).
absl::Status RemoveContents(int dfd, dev_t dev, const std::string& where) {
  int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return base::ErrnoStatus("dup " + where);
  DIR* d = fdopendir(dup_fd);
  if (d == nullptr) {
    int err = errno;
    close(dup_fd);
    return base::ErrnoStatus("fdopendir " + where, err);
  }
  absl::Status first;
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  closedir(d);
  for (const std::string& name : names) {
    std::string child = where + "/" + name;
    struct stat st;
    if (fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT && first.ok()) first = base::ErrnoStatus("stat " + child);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) {
        if (first.ok()) {
          first = absl::FailedPreconditionError(
              fmt::format("{} is another filesystem (a mount point?); not removing it", child));
        }
        continue;
      }
      base::UniqueFd sub(openat(dfd, name.c_str(),
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        if (errno != ENOENT && first.ok()) first = base::ErrnoStatus("open " + child);
        continue;
      }
      absl::Status s = RemoveContents(sub.get(), dev, child);
      if (!s.ok() && first.ok()) first = s;
      if (unlinkat(dfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT && first.ok()) {
        first = base::ErrnoStatus("rmdir " + child);
      }
    } else if (unlinkat(dfd, name.c_str(), 0) != 0 && errno != ENOENT && first.ok()) {
      first = base::ErrnoStatus("unlink " + child);
    }
  }
  return first;
}

}  // namespace

std::string UniqueName(std::string_view prefix) {
  static std::atomic<unsigned> counter{0};
  static const unsigned salt = std::random_device{}();
  unsigned n = counter.fetch_add(1);
  std::mt19937 rng(salt ^ (n * 2654435761u) ^ static_cast<unsigned>(getpid()));
  return fmt::format("{}-{}-{}-{:06x}", prefix, getpid(), n, rng() & 0xffffff);
}

std::vector<std::string> Split(std::string_view text, char sep, bool skip_empty) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(sep, start);
    std::string_view piece = text.substr(start, end == std::string_view::npos ? end : end - start);
    if (!piece.empty() || !skip_empty) out.emplace_back(piece);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::vector<std::string> SplitLines(std::string_view text) {
  std::vector<std::string> out;
  for (const std::string& line : Split(text, '\n')) {
    size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    size_t e = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(b, e - b + 1));
  }
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus("open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoStatus("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status WriteFile(const std::string& path, std::string_view data, int mode) {
  base::UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return base::ErrnoStatus("create " + path);
  while (!data.empty()) {
    ssize_t n = write(fd.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoStatus("write " + path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& dir, int mode) {
  if (dir.empty()) return absl::InvalidArgumentError("MakeDirs: empty path");
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return base::ErrnoStatus("mkdir " + part);
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return base::ErrnoStatus("stat " + dir);
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(dir + " is not a directory");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> MountsUnder(const std::string& dir) {
  absl::StatusOr<std::string> info = ReadFile("/proc/self/mountinfo");
  if (!info.ok()) return info.status();
  std::vector<std::string> out;
  for (const std::string& line : Split(*info, '\n')) {
    // id parent major:minor root mount_point options ...
    std::vector<std::string> f = Split(line, ' ');
    if (f.size() < 5) continue;
    std::string mp = DecodeMountinfoPath(f[4]);
    if (IsAtOrBelow(mp, dir)) out.push_back(std::move(mp));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

absl::Status UnmountUnder(const std::string& dir) {
  // Each round removes the top of every stack; a bounded number of rounds
  // guards against a mount that keeps failing.
  for (int round = 0; round < 64; ++round) {
    absl::StatusOr<std::vector<std::string>> mounts = MountsUnder(dir);
    if (!mounts.ok()) return mounts.status();
    if (mounts->empty()) return absl::OkStatus();
    for (const std::string& mp : *mounts) {
      if (umount2(mp.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL &&
          errno != ENOENT) {
        return base::ErrnoStatus("umount " + mp);
      }
    }
  }
  return absl::DeadlineExceededError("mounts keep reappearing under " + dir);
}

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoStatus("stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return base::ErrnoStatus("unlink " + path);
    return absl::OkStatus();
  }
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus("open " + path);
  absl::Status s = RemoveContents(fd.get(), st.st_dev, path);
  if (rmdir(path.c_str()) != 0 && errno != ENOENT && s.ok()) s = base::ErrnoStatus("rmdir " + path);
  return s;
}

ScopedTempDir::ScopedTempDir(std::string_view prefix, std::string_view base) {
  std::string tmpl = fmt::format("{}/{}XXXXXX", base, prefix);
  if (mkdtemp(tmpl.data()) == nullptr) {
    status_ = base::ErrnoStatus("mkdtemp " + tmpl);
    return;
  }
  char real[PATH_MAX];
  if (realpath(tmpl.c_str(), real) == nullptr) {
    status_ = base::ErrnoStatus("realpath " + tmpl);
    rmdir(tmpl.c_str());
    return;
  }
  path_ = real;
}

ScopedTempDir::~ScopedTempDir() {
  absl::Status s = Remove();
  if (!s.ok()) fmt::print(stderr, "ScopedTempDir: {}\n", s.ToString());
}

ScopedTempDir::ScopedTempDir(ScopedTempDir&& other) noexcept
    : path_(std::exchange(other.path_, std::string())), status_(other.status_) {}

ScopedTempDir& ScopedTempDir::operator=(ScopedTempDir&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    path_ = std::exchange(other.path_, std::string());
    status_ = other.status_;
  }
  return *this;
}

std::string ScopedTempDir::Sub(std::string_view name) const {
  return fmt::format("{}/{}", path_, name);
}

absl::Status ScopedTempDir::Remove() {
  if (path_.empty()) return absl::OkStatus();
  absl::Status s = UnmountUnder(path_);
  absl::Status r = RemoveTree(path_);
  if (s.ok()) s = r;
  if (s.ok()) path_.clear();
  return s;
}

std::string ScopedTempDir::Release() { return std::exchange(path_, std::string()); }

}  // namespace test_support
