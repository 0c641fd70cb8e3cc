#include "shim/manager/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/errno_status.h"
#include "fmt/format.h"

namespace shim {

InstanceLock InstanceLock::Acquire(const std::string& path) {
  InstanceLock lock;
  for (int attempt = 0; attempt < 100; ++attempt) {
    base::UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return lock;
    while (flock(fd.get(), LOCK_EX) != 0 && errno == EINTR) {
    }
    struct stat held, now;
    if (fstat(fd.get(), &held) == 0 && stat(path.c_str(), &now) == 0 &&
        held.st_ino == now.st_ino && held.st_dev == now.st_dev) {
      lock.fd_ = std::move(fd);
      return lock;
    }
    // The file was removed while we waited: lock the new one.
  }
  return lock;
}

absl::Status MakeInstanceDir(const InstancePaths& paths) {
  std::filesystem::path dir(paths.dir);
  std::error_code ec;
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec) return absl::InternalError(fmt::format("mkdir {}: {}", dir.parent_path().string(), ec.message()));
  if (mkdir(paths.dir.c_str(), 0700) != 0 && errno != EEXIST)
    return base::ErrnoStatus(fmt::format("mkdir {}", paths.dir));
  // The socket lives here: only our uid may even reach it (CVE-2020-15257).
  if (chmod(paths.dir.c_str(), 0700) != 0)
    return base::ErrnoStatus(fmt::format("chmod {}", paths.dir));
  return absl::OkStatus();
}

}  // namespace shim
