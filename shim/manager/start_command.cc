// `start`: one daemon per containerd. Under the instance lock, either find
// the live daemon or start one, and print its address. (The common case,
// a daemon that already serves the namespace, is StartIfServing.)
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "base/read_file.h"
#include "shim/manager/commands.h"
#include "shim/manager/instance_lock.h"
#include "shim/manager/shim_cgroup.h"
#include "shim/manager/start_fast.h"
#include "shim/manager/start_input.h"
#include "shim/manager/task_api_version.h"
#include "shim/store/paths.h"
#include "shim/task/admin.pb.h"
#include "ttrpc/client.h"

namespace shim {
namespace {

constexpr int kReadyTimeoutMs = 20000;
// Installed next to this binary.
constexpr char kKeeperBinary[] = "containerd-shim-embed-v1-keeper";

std::string LogTail(const std::string& path) {
  std::string all = base::ReadFile(path).value_or("");
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

// Starts the keeper in its own session, with no stdio on containerd's pipe:
//   <dir>/containerd-shim-embed-v1-keeper SOCKET LOG -- <self> -address A [-namespace NS] [-debug] serve
// and waits until its first server serves.
absl::Status SpawnDaemon(const Flags& flags, const InstancePaths& paths) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe2");
  base::UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  std::string self = SelfExecutable();
  std::string keeper = SiblingBinary(kKeeperBinary);

  pid_t pid = fork();
  if (pid < 0) return base::ErrnoStatus("fork");
  if (pid == 0) {
    setsid();
    int null = open("/dev/null", O_RDWR);
    int log = open(paths.log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
    dup2(null, 0);
    dup2(null, 1);
    dup2(log >= 0 ? log : null, 2);  // a crash before logging starts is still seen
    dup2(ready_write.get(), 3);      // dup2 clears CLOEXEC on fd 3
    setenv("EMBED_SHIM_READY_FD", "3", 1);
    std::vector<std::string> args = {keeper, paths.socket, paths.log, "--",
                                     self, "-address", flags.address};
    if (!flags.namespace_.empty()) {
      args.push_back("-namespace");
      args.push_back(flags.namespace_);
    }
    if (flags.debug) args.push_back("-debug");
    args.push_back("serve");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(keeper.c_str(), argv.data());
    fmt::print(stderr, "start: exec {}: {}\n", keeper, std::strerror(errno));
    _exit(127);
  }
  ready_write.Reset();
  pollfd p{ready_read.get(), POLLIN, 0};
  int rc = poll(&p, 1, kReadyTimeoutMs);
  char buf[8];
  if (rc == 1 && read(ready_read.get(), buf, sizeof buf) > 0) return absl::OkStatus();
  return absl::UnavailableError(
      fmt::format("the shim daemon did not start{}; its log says:\n{}",
                  rc == 0 ? " within 20 s" : "", LogTail(paths.log)));
}

// Asks the running daemon to serve `ns` and returns that socket's address.
absl::StatusOr<std::string> ServeNamespace(const InstancePaths& paths, const std::string& ns) {
  auto client = ttrpc::BlockingClient::Connect(paths.socket);
  if (!client.ok()) return client.status();
  embedshim::ServeNamespaceRequest req;
  req.set_namespace_(ns);
  ttrpc::CallOptions opts;
  opts.timeout = absl::Seconds(10);
  auto resp = (*client)->Call<embedshim::ServeNamespaceResponse>(
      "embedshim.v1.Admin", "ServeNamespace", req, opts);
  if (!resp.ok()) return resp.status();
  return resp->address();
}

// The ShimCgroup of the options on stdin, joined before the keeper is
// forked so that it and every server inherit it (shim/manager/shim_cgroup.h). Never
// fails the start: what went wrong goes to the shim's log.
void JoinShimCgroupForLaunch(const Flags& flags, const InstancePaths& paths,
                             const StartInput& input) {
  if (!input.options) return;
  std::string why;
  std::string cgroup = ShimCgroupOf(*input.options, &why);
  if (cgroup.empty() && why.empty()) return;
  base::Log::Init(paths.log, flags.debug);  // stdout and stderr are containerd's address
  if (cgroup.empty()) {
    base::LogDebug("start: no ShimCgroup: {}", why);
    return;
  }
  if (absl::Status st = JoinCgroup(cgroup); !st.ok()) {
    base::LogWarn("start: ShimCgroup {}: not joined: {}", cgroup, st);
    return;
  }
  base::LogInfo("start: the shim runs in ShimCgroup {}", cgroup);
}

}  // namespace

int RunStart(const Flags& flags) {
  if (flags.address.empty()) {
    fmt::print(stderr, "start: -address (containerd's socket) is required\n");
    return 1;
  }
  if (std::optional<int> rc = StartIfServing(flags)) return *rc;
  // Read for what it is (options Any, or 2.3's BootstrapParams), so that
  // neither is ever taken for the other.
  absl::StatusOr<std::string> stdin_bytes = ReadStartStdin();
  absl::StatusOr<StartInput> input =
      stdin_bytes.ok() ? ParseStartInput(*stdin_bytes, flags) : stdin_bytes.status();
  if (!input.ok()) {
    fmt::print(stderr, "start: {}\n", input.status());
    return 1;
  }
  // 2.3+ says so itself; before, containerd's executable tells.
  const int task_api = input->bootstrap ? 3 : TaskApiVersionOf(flags.publish_binary);
  InstancePaths paths = PathsFor(flags.address);
  if (absl::Status st = MakeInstanceDir(paths); !st.ok()) {
    fmt::print(stderr, "start: {}\n", st);
    return 1;
  }
  // Two starts at once (containerd starts tasks in parallel) give one daemon.
  InstanceLock lock = InstanceLock::Acquire(paths.lock);
  if (!lock.held()) {
    fmt::print(stderr, "start: cannot lock {}: {}\n", paths.lock, std::strerror(errno));
    return 1;
  }
  std::string address = flags.namespace_.empty()
                            ? paths.address()
                            : "unix://" + paths.NamespaceSocket(flags.namespace_);
  if (Listening(paths.socket)) {
    CountAnsweredStart(paths);  // so that the daemon, if it lingers idle, stays
    if (!flags.namespace_.empty()) {
      auto served = ServeNamespace(paths, flags.namespace_);
      if (!served.ok()) {
        fmt::print(stderr, "start: the running shim cannot serve namespace {}: {}\n",
                   flags.namespace_, served.status());
        return 1;
      }
      address = *served;
    }
  } else {
    JoinShimCgroupForLaunch(flags, paths, *input);
    if (absl::Status st = SpawnDaemon(flags, paths); !st.ok()) {
      fmt::print(stderr, "start: {}\n", st);
      return 1;
    }
  }
  // containerd 1.6 reloads a task after its own restart from the bundle's
  // `address` file (read without trimming: no newline).
  if (absl::Status st = WriteAddressFile(address); !st.ok()) {
    fmt::print(stderr, "start: {}\n", st);
    return 1;
  }
  // containerd reads all of stdout as the address (or, 2.x, the bootstrap
  // JSON): print nothing else.
  fmt::print("{}", StartAnswer(address, task_api));
  return 0;
}

}  // namespace shim
