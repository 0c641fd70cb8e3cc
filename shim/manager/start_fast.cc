#include "shim/manager/start_fast.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"
#include "shim/manager/instance_lock.h"
#include "shim/manager/task_api_version.h"
#include "shim/process/identifier.h"
#include "shim/store/paths.h"

namespace shim {

bool Listening(const std::string& path) { return base::DialUnix(path).ok(); }

absl::Status WriteAddressFile(const std::string& address) {
  base::UniqueFd fd(open(".address", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return base::ErrnoStatus("open .address");
  if (write(fd.get(), address.data(), address.size()) != static_cast<ssize_t>(address.size()))
    return base::ErrnoStatus("write .address");
  fd.Reset();
  if (rename(".address", "address") != 0) return base::ErrnoStatus("rename .address");
  return absl::OkStatus();
}

std::optional<int> StartIfServing(const Flags& flags) {
  if (flags.address.empty() || flags.namespace_.empty() || !IsValidIdentifier(flags.namespace_))
    return std::nullopt;
  InstancePaths paths = PathsFor(flags.address);
  struct stat st;
  if (stat(paths.dir.c_str(), &st) != 0) return std::nullopt;  // no shim yet
  // Held until we exit: a daemon leaving when idle takes it too, so it
  // cannot remove the socket between our check and our answer.
  InstanceLock lock = InstanceLock::Acquire(paths.lock);
  if (!lock.held()) return std::nullopt;
  const std::string socket = paths.NamespaceSocket(flags.namespace_);
  if (!Listening(socket)) return std::nullopt;
  const std::string address = "unix://" + socket;
  CountAnsweredStart(paths);  // so that the daemon, if it lingers idle, stays
  if (absl::Status st = WriteAddressFile(address); !st.ok()) {
    std::fprintf(stderr, "start: %s\n", st.ToString().c_str());
    return 1;
  }
  // containerd reads all of stdout as the address (or, 2.x, the bootstrap
  // JSON): print nothing else.
  std::fputs(StartAnswer(address, TaskApiVersionOf(flags.publish_binary)).c_str(), stdout);
  return 0;
}

}  // namespace shim
