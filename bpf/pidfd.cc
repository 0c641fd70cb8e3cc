#include "bpf/pidfd.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "absl/strings/str_split.h"
#include "base/dir.h"
#include "base/errno_status.h"
#include "base/read_file.h"
#include "bpf/exit_monitor_abi.h"

namespace bpf {
namespace {

constexpr unsigned kPfExiting = 0x00000004;  // PF_EXITING in task->flags

// The fields of a /proc stat file after "(comm)", which may itself hold
// spaces and parentheses: fields()[0] is field 3 (state).
absl::StatusOr<std::vector<std::string>> ReadStatFields(const std::string& path) {
  absl::StatusOr<std::string> stat = base::ReadFile(path);
  if (!stat.ok()) return stat.status();
  std::string_view text = *stat;
  size_t paren = text.rfind(')');
  if (paren == std::string_view::npos || paren + 2 > text.size()) {
    return absl::DataLossError(fmt::format("{}: cannot parse", path));
  }
  std::string_view rest = text.substr(paren + 2);
  // absl::string_view is not std::string_view in this absl build.
  return absl::StrSplit(absl::string_view(rest.data(), rest.size()), ' ', absl::SkipEmpty());
}

template <typename T>
bool ParseField(const std::vector<std::string>& fields, int field, T* out) {
  size_t i = field - 3;
  if (i >= fields.size()) return false;
  const std::string& s = fields[i];
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

absl::StatusOr<uint64_t> StartFromStat(const std::vector<std::string>& fields, pid_t pid) {
  uint64_t ticks;
  if (!ParseField(fields, 22, &ticks)) {
    return absl::DataLossError(fmt::format("/proc/{}/stat: bad start time", pid));
  }
  return ticks * EM_TICK_NS;
}

}  // namespace

absl::StatusOr<base::UniqueFd> PidfdOpen(pid_t pid, unsigned flags) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
  if (fd < 0) return base::ErrnoStatus(fmt::format("pidfd_open {}", pid));
  return base::UniqueFd(fd);
}

absl::StatusOr<uint64_t> ReadStartBoottime(pid_t pid) {
  // The BPF side compares at EM_TICK_NS, which assumes USER_HZ == 100.
  if (::sysconf(_SC_CLK_TCK) != 1000000000 / static_cast<long>(EM_TICK_NS)) {
    return absl::FailedPreconditionError("USER_HZ is not 100: start times cannot be compared");
  }
  auto fields = ReadStatFields(fmt::format("/proc/{}/stat", pid));
  if (!fields.ok()) return fields.status();
  return StartFromStat(*fields, pid);
}

bool SameStart(uint64_t a, uint64_t b) { return a / EM_TICK_NS == b / EM_TICK_NS; }

absl::StatusOr<base::UniqueFd> PidfdIfSameLive(pid_t pid, uint64_t start_boottime) {
  // The pidfd pins the identity: if it is still unsignalled after we read
  // /proc, what we read belonged to that same process.
  auto pidfd = PidfdOpen(pid);
  if (!pidfd.ok()) return pidfd.status();  // NotFound for ESRCH
  auto start = ReadStartBoottime(pid);
  if (!start.ok()) return start.status();
  pollfd p{pidfd->get(), POLLIN, 0};
  if (::poll(&p, 1, 0) < 0) return base::ErrnoStatus("poll pidfd");
  if ((p.revents & POLLIN) || !SameStart(*start, start_boottime))
    return absl::NotFoundError(fmt::format("pid {} is no longer that process", pid));
  return std::move(*pidfd);
}

absl::StatusOr<bool> IsSameLiveProcess(pid_t pid, uint64_t start_boottime) {
  auto pidfd = PidfdIfSameLive(pid, start_boottime);
  if (absl::IsNotFound(pidfd.status())) return false;
  if (!pidfd.ok()) return pidfd.status();
  return true;
}

absl::StatusOr<ProcessState> ProbeProcess(pid_t pid, uint64_t start_boottime) {
  auto start = ReadStartBoottime(pid);
  if (!start.ok()) {
    if (absl::IsNotFound(start.status())) return ProcessState::kGone;
    return start.status();
  }
  if (!SameStart(*start, start_boottime)) return ProcessState::kGone;

  // The group dies in its last thread; PF_EXITING is set early in do_exit,
  // before the exit tracepoint. So one thread without it means the group's
  // exit is still to come.
  std::string dir = fmt::format("/proc/{}/task", pid);
  base::UniqueDir d = base::OpenDir(dir);
  if (!d) {
    if (errno == ENOENT) return ProcessState::kGone;
    return base::ErrnoStatus(fmt::format("opendir {}", dir));
  }
  bool running = false;
  while (dirent* e = ::readdir(d.get())) {
    if (e->d_name[0] == '.') continue;
    auto fields = ReadStatFields(fmt::format("{}/{}/stat", dir, e->d_name));
    if (!fields.ok()) continue;  // the thread is gone
    unsigned flags;
    if (ParseField(*fields, 9, &flags) && !(flags & kPfExiting)) {
      running = true;
      break;
    }
  }
  // Had the pid been reused during the scan, the threads were someone else's.
  start = ReadStartBoottime(pid);
  if (!start.ok() || !SameStart(*start, start_boottime)) return ProcessState::kGone;
  return running ? ProcessState::kRunning : ProcessState::kExiting;
}

}  // namespace bpf
