#include "base/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "base/errno_status.h"
#include "fmt/format.h"

namespace base {

absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return absl::InvalidArgumentError(fmt::format(
        "socket path {:?} must be 1 to {} bytes long", path, sizeof addr.sun_path - 1));
  std::memcpy(addr.sun_path, path.data(), path.size());
  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return base::ErrnoStatus("socket");
  // Callers put the socket in a 0700 directory, so the moment between bind
  // and chmod gives nobody else a chance to connect.
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return base::ErrnoStatus(fmt::format("bind {}", path));
  if (chmod(path.c_str(), 0600) != 0) return base::ErrnoStatus(fmt::format("chmod {}", path));
  if (listen(fd.get(), SOMAXCONN) != 0) return base::ErrnoStatus("listen");
  return fd;
}

std::string_view SocketPath(std::string_view address) {
  if (address.substr(0, 7) == "unix://") address.remove_prefix(7);
  return address;
}

absl::StatusOr<base::UniqueFd> DialUnix(std::string_view address) {
  std::string_view path = SocketPath(address);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return absl::InvalidArgumentError(fmt::format("bad socket address {:?}", address));
  std::memcpy(addr.sun_path, path.data(), path.size());
  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return base::ErrnoStatus("socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return base::ErrnoStatus(fmt::format("connect {}", path));
  return fd;
}

}  // namespace base
