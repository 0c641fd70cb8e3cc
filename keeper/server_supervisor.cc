// The keeper's server: started (fork/exec) with a fresh channel, told what
// exists and what was never answered, and replaced when it dies.
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "keeper/keeper.h"

namespace keeper {

void Keeper::SpawnServer() {
  base::UniqueFd ours, theirs;
  if (absl::Status st = MakeChannel(ours, theirs); !st.ok()) {
    base::LogError("keeper: {}", st);
    loop_.RunAfter(absl::Seconds(1), [this] { SpawnServer(); });
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    base::LogError("keeper: fork: {}", std::strerror(errno));
    loop_.RunAfter(absl::Seconds(1), [this] { SpawnServer(); });
    return;
  }
  if (pid == 0) {
    dup2(theirs.get(), 3);  // clears CLOEXEC on fd 3
    setenv("EMBED_SHIM_KEEPER_FD", "3", 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Containers inherit the server's OOM score through runc: not ours.
    if (base::UniqueFd fd(open("/proc/self/oom_score_adj", O_WRONLY)); fd)
      (void)!write(fd.get(), "0", 1);
    std::vector<char*> argv;
    for (auto& a : config_.server_argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  server_pid_ = pid;
  server_served_ = false;
  server_pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  channel_ = std::move(ours);
  fcntl(channel_.get(), F_SETFL, fcntl(channel_.get(), F_GETFL) | O_NONBLOCK);
  (void)loop_.Add(server_pidfd_.get(), EPOLLIN, [this](uint32_t) { OnServerExit(); });
  (void)loop_.Add(channel_.get(), EPOLLIN, [this](uint32_t) { OnChannel(); });

  // Tell the new server what exists, then replay what was never answered.
  for (auto& l : listeners_) {
    if (!l->label.empty()) ToServer({MsgType::kListening, 0, 0, l->label, {}, {}});
  }
  for (auto& [id, c] : conns_) ToServer({MsgType::kConnOpen, id, c.peer.uid, c.label, {}, {}});
  for (auto& [name, relay] : ttys_) ToServer({MsgType::kTtyKnown, 0, 0, name, {}, {}});
  ToServer({MsgType::kHelloDone, 0, 0, {}, {}, {}});
  for (auto& [seq, p] : pending_)
    ToServer({MsgType::kFrame, p.conn, kFrameReplayed, {}, p.frame, {}});
  base::LogInfo("keeper: server pid {} started; {} connections, {} requests replayed", pid,
          conns_.size(), pending_.size());
}

void Keeper::OnServerExit() {
  int status = 0;
  waitpid(server_pid_, &status, 0);
  loop_.Remove(server_pidfd_.get());
  loop_.Remove(channel_.get());
  // Whatever the dead server had sent is still in the channel: keep it.
  while (channel_) {
    auto msg = RecvMsg(channel_.get());
    if (!msg.ok() || !msg->has_value()) break;
    OnServerMsg(std::move(**msg));
  }
  server_pidfd_.Reset();
  channel_.Reset();
  server_pid_ = -1;
  if (upgrading_) return;
  if (shutting_down_) {
    loop_.Stop();
    return;
  }
  base::LogWarn("keeper: server exited ({}); starting another",
          WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                              : fmt::format("status {}", WEXITSTATUS(status)));
  // A server that keeps dying before it ever serves (a bad binary, no BPF)
  // must not spin the CPU; one that served and was then killed is replaced
  // at once, however soon, because containerd gives a State call only 2 s.
  quick_deaths_ = server_served_ ? 0 : quick_deaths_ + 1;
  absl::Duration delay = quick_deaths_ > 3 ? absl::Seconds(1) : absl::ZeroDuration();
  loop_.RunAfter(delay, [this] { SpawnServer(); });
}

void Keeper::StopServerAndWait() {
  if (server_pid_ <= 0) return;
  kill(server_pid_, SIGTERM);  // it finishes its runc calls and leaves
  pollfd p{server_pidfd_.get(), POLLIN, 0};
  if (poll(&p, 1, 10000) <= 0) kill(server_pid_, SIGKILL);
  upgrading_ = true;  // no respawn from OnServerExit
  OnServerExit();
  upgrading_ = false;
}

}  // namespace keeper
