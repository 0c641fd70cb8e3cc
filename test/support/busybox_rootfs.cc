#include "test/support/busybox_rootfs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "base/errno_status.h"
#include "fmt/format.h"
#include "test/support/fs_util.h"
#include "test/support/subprocess.h"

namespace test_support {

absl::Status BusyboxRootfs(const std::string& dir, const std::string& busybox) {
  for (const char* sub : {"", "/bin", "/proc", "/dev", "/sys", "/tmp", "/etc", "/root"}) {
    if (absl::Status s = MakeDirs(dir + sub); !s.ok()) return s;
  }
  if (chmod((dir + "/tmp").c_str(), 01777) != 0) return base::ErrnoStatus("chmod " + dir + "/tmp");

  const std::string target = dir + "/bin/busybox";
  std::error_code ec;
  std::filesystem::copy_file(busybox, target, std::filesystem::copy_options::overwrite_existing,
                             ec);
  if (ec) {
    return absl::FailedPreconditionError(
        fmt::format("copy {} to {}: {} (is busybox-static installed?)", busybox, target,
                    ec.message()));
  }
  if (chmod(target.c_str(), 0755) != 0) return base::ErrnoStatus("chmod " + target);

  absl::StatusOr<Result> list = Run({busybox, "--list"}, std::chrono::seconds(30));
  if (!list.ok()) return list.status();
  if (list->exit_code != 0) {
    return absl::InternalError(fmt::format("{} --list: {}", busybox, list->ToString()));
  }
  int applets = 0;
  for (const std::string& applet : SplitLines(list->out)) {
    if (applet == "busybox" || applet.find('/') != std::string::npos) continue;
    std::string link = fmt::format("{}/bin/{}", dir, applet);
    if (symlink("busybox", link.c_str()) != 0 && errno != EEXIST) {
      return base::ErrnoStatus("symlink " + link);
    }
    ++applets;
  }
  if (applets == 0) return absl::InternalError(busybox + " --list printed no applets");

  if (absl::Status s = WriteFile(dir + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
      !s.ok()) {
    return s;
  }
  return WriteFile(dir + "/etc/group", "root:x:0:\n");
}

}  // namespace test_support
