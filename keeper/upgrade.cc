// The keeper's upgrade: everything it holds goes, by fd number and in a
// memfd, to the keeper binary now installed (execve), which takes it over.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "base/absl_fmt.h"
#include "base/corrupt_file.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "keeper/keeper.h"
#include "keeper/upgrade_state.h"

namespace keeper {

void Keeper::Upgrade() {
  base::LogInfo("keeper: upgrading: stopping the server, re-executing {}", config_.self_argv[0]);
  StopServerAndWait();
  // Everything we hold (keeper/upgrade_state.h); fds stay open across execve.
  UpgradeState saved;
  saved.next_conn = next_conn_;
  saved.next_seq = next_seq_;
  for (auto& l : listeners_) saved.listeners.push_back({l->fd.get(), l->label, l->path});
  for (auto& [id, c] : conns_)
    saved.conns.push_back({c.io->fd(), id, c.peer.uid, c.peer.pid, c.label, c.io->unsent(),
                           c.io->partial()});
  for (auto& [seq, p] : pending_) saved.pending.push_back({seq, p.conn, p.stream, p.frame});
  for (auto& [name, fd] : kept_) saved.kept.push_back({fd.get(), name});
  for (auto& [name, relay] : ttys_) {
    saved.ttys.push_back(relay->Save());
    base::LogInfo("keeper: upgrade: tty {} carries {} bytes for stdout, {} for the terminal", name,
            saved.ttys.back().to_out.size(), saved.ttys.back().to_master.size());
  }
  absl::StatusOr<std::string> state = EncodeUpgradeState(saved);
  if (!state.ok()) {
    base::LogError("keeper: upgrade: cannot write the state ({}); going on as before", state.status());
    SpawnServer();
    return;
  }
  std::vector<int> exec_fds = FdsOf(saved);
  for (int fd : exec_fds) fcntl(fd, F_SETFD, 0);
  auto GoOnAsBefore = [&exec_fds] {
    for (int fd : exec_fds) fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for the next server
  };
  // Without MFD_CLOEXEC: the next keeper reads it.
  base::UniqueFd mfd(memfd_create("keeper-state", 0));
  if (!mfd ||
      write(mfd.get(), state->data(), state->size()) != static_cast<ssize_t>(state->size())) {
    base::LogError("keeper: upgrade: cannot write the state ({}); going on as before",
             std::strerror(errno));
    GoOnAsBefore();
    SpawnServer();
    return;
  }
  lseek(mfd.get(), 0, SEEK_SET);
  setenv("EMBED_SHIM_KEEPER_RESUME", std::to_string(mfd.get()).c_str(), 1);
  std::vector<char*> argv;
  for (auto& a : config_.self_argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  base::LogError("keeper: upgrade: exec {}: {}; going on as before", argv[0], std::strerror(errno));
  unsetenv("EMBED_SHIM_KEEPER_RESUME");
  mfd.Reset();
  GoOnAsBefore();
  SpawnServer();
}

absl::Status Keeper::Resume(base::UniqueFd state_fd) {
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = read(state_fd.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  state_fd.Reset();
  if (n < 0) return base::ErrnoStatus("read the upgrade state from the previous keeper");
  // Decoded and checked whole before anything is taken: a bad state leaves
  // no half-resumed keeper, and the caller can start afresh.
  absl::StatusOr<UpgradeState> state = DecodeUpgradeState(text);
  if (state.ok()) {
    for (int fd : FdsOf(*state)) {
      if (fcntl(fd, F_GETFD) >= 0) continue;
      state = absl::DataLossError(fmt::format("fd {} is not open in the new keeper", fd));
      break;
    }
  }
  if (!state.ok()) {
    // Kept beside the socket for whoever looks into why.
    const std::string& sock = config_.socket_path;
    base::KeepCorruptCopy(sock.substr(0, sock.rfind('/') + 1) + "upgrade-state", text,
                          std::string(state.status().message()));
    return absl::DataLossError(fmt::format("the upgrade state from the previous keeper: {}",
                                           state.status().message()));
  }
  ResumeFrom(std::move(*state));
  base::LogInfo(
      "keeper: resumed after upgrade: {} listeners, {} connections, {} pending, {} kept fds, "
      "{} terminals",
      listeners_.size(), conns_.size(), pending_.size(), kept_.size(), ttys_.size());
  SpawnServer();
  return absl::OkStatus();
}

void Keeper::ResumeFrom(UpgradeState state) {
  // Every fd is ours from here on (and not the next server's); one that
  // cannot be put back on the loop is closed with a log line, the rest go on.
  for (int fd : FdsOf(state)) fcntl(fd, F_SETFD, FD_CLOEXEC);
  next_conn_ = state.next_conn;
  next_seq_ = state.next_seq;
  for (auto& l : state.listeners)
    if (absl::Status st = AddListener(base::UniqueFd(l.fd), l.label); !st.ok())
      base::LogError("keeper: resume: listener {}: {}; closed", l.path, st);
  for (auto& saved : state.conns) {
    if (absl::Status st = AddConn(saved.id, base::UniqueFd(saved.fd), std::move(saved.label),
                                  std::move(saved.out), saved.partial);
        !st.ok()) {
      base::LogError("keeper: resume: connection {}: {}; closed", saved.id, st);
      continue;
    }
    conns_[saved.id].peer.uid = saved.peer_uid;
    conns_[saved.id].peer.pid = saved.peer_pid;
  }
  for (auto& p : state.pending) {
    pending_[p.seq] = Pending{p.conn, p.stream, std::move(p.frame)};
    pending_index_[p.conn][p.stream] = p.seq;
  }
  for (auto& k : state.kept) kept_[k.name] = base::UniqueFd(k.fd);
  for (auto& t : state.ttys) {
    std::string name = t.name;
    absl::StatusOr<std::unique_ptr<TtyRelay>> relay = TtyRelay::Restore(loop_, std::move(t));
    if (relay.ok()) {
      ttys_[name] = std::move(*relay);
    } else {
      base::LogError("keeper: resume: {}", relay.status());
    }
  }
}

}  // namespace keeper
