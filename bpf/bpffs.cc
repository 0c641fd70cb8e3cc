#include "bpf/bpffs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <fmt/format.h>

#include "base/dir.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"

namespace bpf {
namespace {

// Removes the entries of the directory `dirfd` (which it consumes).
absl::Status RemoveEntries(base::UniqueFd dirfd, const std::string& path) {
  base::UniqueDir d = base::OpenDir(dirfd);
  if (!d) return base::ErrnoStatus(fmt::format("fdopendir {}", path));
  while (dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string child = fmt::format("{}/{}", path, name);
    if (e->d_type == DT_DIR) {
      base::UniqueFd sub(::openat(::dirfd(d.get()), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!sub) return base::ErrnoStatus(fmt::format("open {}", child));
      if (auto s = RemoveEntries(std::move(sub), child); !s.ok()) return s;
    }
    int flags = e->d_type == DT_DIR ? AT_REMOVEDIR : 0;
    if (::unlinkat(::dirfd(d.get()), e->d_name, flags) != 0 && errno != ENOENT) {
      return base::ErrnoStatus(fmt::format("remove {}", child));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsBpffs(const std::string& path) {
  struct statfs st;
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

absl::Status EnsureBpffsMounted() {
  std::string root(kBpffsRoot);
  if (IsBpffs(root)) return absl::OkStatus();
  if (::mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
    return base::ErrnoStatus(fmt::format("mkdir {}", root));
  }
  if (::mount("bpf", root.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
    int err = errno;
    // A concurrent mounter won: fine as long as a bpffs is there now.
    if (IsBpffs(root)) return absl::OkStatus();
    absl::Status s = base::ErrnoStatus(fmt::format("mount bpffs on {}", root), err);
    if (err == EPERM) {
      return absl::PermissionDeniedError(fmt::format(
          "{} (needs CAP_SYS_ADMIN; or mount it beforehand: mount -t bpf bpf {})", std::string(s.message()),
          root));
    }
    return s;
  }
  return absl::OkStatus();
}

absl::Status MakeDirs(std::string_view path, mode_t mode) {
  std::string p;
  size_t pos = 0;
  while (pos != std::string_view::npos) {
    pos = path.find('/', pos + 1);
    p = std::string(path.substr(0, pos));
    if (p.empty()) continue;
    if (::mkdir(p.c_str(), mode) != 0 && errno != EEXIST) {
      return base::ErrnoStatus(fmt::format("mkdir {}", p));
    }
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoStatus(fmt::format("open {}", path));
  }
  if (auto s = RemoveEntries(std::move(fd), path); !s.ok()) return s;
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoStatus(fmt::format("rmdir {}", path));
  }
  return absl::OkStatus();
}

}  // namespace bpf
