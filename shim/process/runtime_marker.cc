#include "shim/process/runtime_marker.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "base/read_file.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"

namespace shim::process {

std::string CreateRuntimeMarker(const std::string& bundle) {
  return bundle + "/.init.runtime-pid";
}

void WriteRuntimeMarker(const std::string& path, pid_t runtime_pid) {
  auto start = bpf::ReadStartBoottime(runtime_pid);
  if (!start.ok()) return;
  const std::string tmp = path + ".tmp";
  const std::string text = fmt::format("{} {}\n", runtime_pid, *start);
  base::UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd && write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()))
    (void)rename(tmp.c_str(), path.c_str());
}

std::optional<base::UniqueFd> LiveRuntime(const std::string& path) {
  auto text = base::ReadFile(path);
  if (!text.ok()) return std::nullopt;
  pid_t pid = 0;
  unsigned long long start = 0;
  if (sscanf(text->c_str(), "%d %llu", &pid, &start) != 2) return std::nullopt;
  auto pidfd = bpf::PidfdIfSameLive(pid, start);
  if (!pidfd.ok()) return std::nullopt;
  return std::move(*pidfd);
}

bool WaitForMarkedRuntime(const std::string& path, absl::Duration limit) {
  if (access(path.c_str(), F_OK) != 0) return false;
  if (std::optional<base::UniqueFd> runtime = LiveRuntime(path)) {
    pollfd p{runtime->get(), POLLIN, 0};
    (void)poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(limit)));
  }
  return true;
}

}  // namespace shim::process
