// containerd-shim-embed-v1-keeper: started by `containerd-shim-embed-v1
// start`; not for direct use.
//
//   containerd-shim-embed-v1-keeper SOCKET LOG -- SERVER_ARGV...
#include <dirent.h>
#include <fcntl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/absl_fmt.h"
#include "base/dir.h"
#include "base/log.h"
#include "base/startup_code.h"
#include "keeper/keeper.h"

namespace {

// The fds the previous keeper handed over are the only ones open without
// FD_CLOEXEC above stdio (this process opens everything with it). Closed
// when their state could not be read: none must reach the server or runc.
void CloseInheritedFds() {
  std::vector<int> inherited;
  {
    base::UniqueDir d = base::OpenDir("/proc/self/fd");
    if (!d) return;
    while (const dirent* e = readdir(d.get())) {
      int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != dirfd(d.get()) && fcntl(fd, F_GETFD) == 0) inherited.push_back(fd);
    }
  }
  for (int fd : inherited) base::UniqueFd closed(fd);
  base::LogWarn("keeper: closed {} fds the previous keeper handed over", inherited.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || std::strcmp(argv[3], "--") != 0) {
    fmt::print(stderr,
               "usage: {} SOCKET LOG -- SERVER_ARGV...\n"
               "The keeper is started by `containerd-shim-embed-v1 start`.\n",
               argv[0]);
    return 2;
  }
  keeper::Config config;
  config.self_argv.assign(argv, argv + argc);
  config.socket_path = argv[1];
  base::Log::Init(argv[2], false);
  for (int i = 4; i < argc; ++i) config.server_argv.push_back(argv[i]);
  if (const char* fd = std::getenv("EMBED_SHIM_READY_FD")) {
    config.ready_fd.Reset(std::atoi(fd));
    fcntl(config.ready_fd.get(), F_SETFD, FD_CLOEXEC);  // not for the server
    unsetenv("EMBED_SHIM_READY_FD");
  }
  // The keeper holds every connection: the OOM killer should pick the
  // server (which the keeper replaces) long before it picks the keeper.
  if (base::UniqueFd fd(open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)); fd)
    (void)!write(fd.get(), "-999", 4);
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  base::UniqueFd sigfd(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));

  auto loop = base::EventLoop::Create();
  if (!loop.ok()) return 1;
  keeper::Keeper k(**loop, std::move(config));
  (void)(*loop)->Add(sigfd.get(), EPOLLIN, [&](uint32_t) {
    base::LogInfo("keeper: stopping on a signal; containers keep running");
    k.Stop();
  });
  absl::Status st;
  if (const char* resume = std::getenv("EMBED_SHIM_KEEPER_RESUME")) {
    base::UniqueFd state(std::atoi(resume));
    unsetenv("EMBED_SHIM_KEEPER_RESUME");
    st = k.Resume(std::move(state));
    if (!st.ok()) {
      // Nothing of the state was taken. Exiting would leave containerd's
      // connections to nobody; start afresh instead, as a keeper whose
      // predecessor died: the new server recovers every container from
      // disk, containerd sees the held connections close and cleans up
      // those tasks, and new tasks are served.
      base::LogError("keeper: cannot resume after the upgrade ({}); starting afresh", st);
      CloseInheritedFds();
      st = k.Start();
    }
  } else {
    st = k.Start();
  }
  if (!st.ok()) {
    base::LogError("keeper: {}", st);
    return 1;
  }
  base::DropStartupCode();
  (*loop)->Run();
  return 0;
}
