#include "keeper/keeper.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstring>
#include <optional>

#include "base/absl_fmt.h"
#include "base/corrupt_file.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "base/unix_socket.h"
#include "keeper/upgrade_state.h"

namespace keeper {


namespace {

std::string SocketPathOf(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return addr.sun_path;
}

}  // namespace

Keeper::Keeper(base::EventLoop& loop, Config config)
    : loop_(loop), config_(std::move(config)) {}

absl::Status Keeper::Start() {
  unlink(config_.socket_path.c_str());  // `start` holds the lock: nobody listens
  auto fd = base::ListenUnix(config_.socket_path);
  if (!fd.ok()) return fd.status();
  if (absl::Status st = AddListener(std::move(*fd), ""); !st.ok()) return st;
  SpawnServer();
  return absl::OkStatus();
}

void Keeper::Stop() {
  shutting_down_ = true;
  if (server_pid_ > 0) kill(server_pid_, SIGTERM);
  loop_.Stop();
}

absl::Status Keeper::AddListener(base::UniqueFd fd, std::string label) {
  auto l = std::make_unique<Listener>();
  l->path = SocketPathOf(fd.get());
  l->fd = std::move(fd);
  l->label = std::move(label);
  fcntl(l->fd.get(), F_SETFL, fcntl(l->fd.get(), F_GETFL) | O_NONBLOCK);
  Listener* raw = l.get();
  if (absl::Status st = loop_.Add(raw->fd.get(), EPOLLIN, [this, raw](uint32_t) { Accept(*raw); });
      !st.ok())
    return st;
  listeners_.push_back(std::move(l));
  return absl::OkStatus();
}

void Keeper::Accept(Listener& l) {
  for (;;) {
    base::UniqueFd fd(accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;
    ucred peer{};
    socklen_t len = sizeof peer;
    getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len);
    // Only our own uid may talk to the shim (CVE-2020-15257 was about this).
    if (peer.uid != geteuid()) {
      base::LogWarn("keeper: rejected a connection from pid {} uid {}", peer.pid, peer.uid);
      continue;
    }
    uint64_t id = next_conn_++;
    Conn& c = conns_[id];
    c.id = id;
    c.fd = std::move(fd);
    c.label = l.label;
    c.peer = peer;
    (void)loop_.Add(c.fd.get(), EPOLLIN | EPOLLRDHUP, [this, id](uint32_t ev) { OnConn(id, ev); });
    if (channel_) ToServer({MsgType::kConnOpen, id, peer.uid, c.label, {}, {}});
  }
}

void Keeper::OnConn(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (events & EPOLLOUT) {
    WriteToClient(c, {});
    if (!conns_.contains(id)) return;
  }
  if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
  char buf[64 * 1024];
  for (int round = 0; round < 16; ++round) {
    ssize_t n = read(c.fd.get(), buf, sizeof buf);
    if (n > 0) {
      c.decoder.Feed(std::string_view(buf, static_cast<size_t>(n)));
      while (auto frame = c.decoder.Next()) {
        OnFrameFromClient(c, std::move(*frame));
        if (!conns_.contains(id)) return;
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    CloseConn(id, /*tell_server=*/true);
    return;
  }
}

void Keeper::OnFrameFromClient(Conn& c, ttrpc::Frame frame) {
  Msg msg{MsgType::kFrame, c.id, frame.oversized ? kFrameOversized : 0u, {}, {}, {}};
  // Re-encode: the server gets exactly the bytes the client sent (header and
  // payload), or only the header of a frame too large to keep.
  char header[ttrpc::kHeaderSize];
  ttrpc::EncodeHeader(frame.header, header);
  msg.data.assign(header, sizeof header);
  msg.data += frame.payload;
  bool is_request = frame.header.type == static_cast<uint8_t>(ttrpc::MessageType::kRequest) &&
                    !frame.oversized;
  if (is_request) {
    uint64_t seq = next_seq_++;
    pending_[seq] = Pending{c.id, frame.header.stream_id, msg.data};
    pending_index_[c.id][frame.header.stream_id] = seq;
  }
  if (channel_) {
    ToServer(std::move(msg));
  } else if (!is_request) {
    // No server to explain the error to this peer: drop the connection.
    CloseConn(c.id, false);
  }
  // A request waits in pending_ for the next server.
}

void Keeper::WriteToClient(Conn& c, std::string_view bytes) {
  if (c.out.empty() && !bytes.empty()) {
    ssize_t n = write(c.fd.get(), bytes.data(), bytes.size());
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      CloseConn(c.id, true);
      return;
    }
    bytes.remove_prefix(n > 0 ? static_cast<size_t>(n) : 0);
    if (!bytes.empty()) {
      c.out.assign(bytes);
      (void)loop_.Modify(c.fd.get(), EPOLLIN | EPOLLRDHUP | EPOLLOUT);
    }
  } else {
    c.out += bytes;
    while (!c.out.empty()) {
      ssize_t n = write(c.fd.get(), c.out.data(), c.out.size());
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        CloseConn(c.id, true);
        return;
      }
      c.out.erase(0, static_cast<size_t>(n));
    }
    (void)loop_.Modify(c.fd.get(), EPOLLIN | EPOLLRDHUP);
  }
  if (c.out.empty() && c.close_after_flush) CloseConn(c.id, false);
}

void Keeper::CloseConn(uint64_t id, bool tell_server) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  loop_.Remove(it->second.fd.get());
  conns_.erase(it);
  if (auto idx = pending_index_.find(id); idx != pending_index_.end()) {
    for (auto& [stream, seq] : idx->second) pending_.erase(seq);
    pending_index_.erase(idx);
  }
  if (tell_server && channel_) ToServer({MsgType::kConnClosed, id, 0, {}, {}, {}});
}

void Keeper::ToServer(Msg msg) {
  if (!channel_) return;
  if (absl::Status st = SendMsg(channel_.get(), msg); !st.ok())
    base::LogWarn("keeper: to server: {}", st);  // its death is noticed through the pidfd
}

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
    if (int fd = open("/proc/self/oom_score_adj", O_WRONLY); fd >= 0) {
      (void)!write(fd, "0", 1);
      close(fd);
    }
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

void Keeper::OnChannel() {
  for (int i = 0; i < 64 && channel_; ++i) {
    auto msg = RecvMsg(channel_.get());
    if (!msg.ok()) {
      // The server is gone; its pidfd tells us when it is reaped.
      loop_.Remove(channel_.get());
      return;
    }
    if (!msg->has_value()) return;
    OnServerMsg(std::move(**msg));
  }
}

void Keeper::OnServerMsg(Msg msg) {
  switch (msg.type) {
    case MsgType::kFrame: {
      auto it = conns_.find(msg.conn);
      if (it == conns_.end()) return;  // the client left meanwhile
      if (msg.data.size() >= ttrpc::kHeaderSize) {
        ttrpc::FrameHeader h = ttrpc::DecodeHeader(msg.data.data());
        if (auto idx = pending_index_.find(msg.conn); idx != pending_index_.end()) {
          if (auto s = idx->second.find(h.stream_id); s != idx->second.end()) {
            pending_.erase(s->second);
            idx->second.erase(s);
          }
        }
      }
      WriteToClient(it->second, msg.data);
      return;
    }
    case MsgType::kConnClosed: {
      auto it = conns_.find(msg.conn);
      if (it == conns_.end()) return;
      it->second.close_after_flush = true;
      if (it->second.out.empty()) CloseConn(msg.conn, false);
      return;
    }
    case MsgType::kListenFd:
      if (msg.fds.size() == 1) (void)AddListener(std::move(msg.fds[0]), msg.text);
      return;
    case MsgType::kKeepFd:
      if (msg.fds.size() == 1) kept_[msg.text] = std::move(msg.fds[0]);
      return;
    case MsgType::kDropFd:
      kept_.erase(msg.text);
      return;
    case MsgType::kReady:
      server_served_ = true;
      if (config_.ready_fd >= 0) {
        (void)!write(config_.ready_fd, "ready\n", 6);
        close(config_.ready_fd);
        config_.ready_fd = -1;
      }
      return;
    case MsgType::kUpgrade:
      loop_.Post([this] { Upgrade(); });  // after this batch of messages
      return;
    case MsgType::kTtyRelay:
    case MsgType::kTtyResize:
    case MsgType::kTtyCloseIn:
    case MsgType::kTtyDrop:
      OnTtyMsg(std::move(msg));
      return;
    case MsgType::kShutdown:
      // The server holds the start lock and removes the rest once we are gone.
      shutting_down_ = true;
      for (auto& l : listeners_) {
        loop_.Remove(l->fd.get());
        if (!l->path.empty()) unlink(l->path.c_str());
      }
      listeners_.clear();
      loop_.Stop();
      return;
    default:
      base::LogWarn("keeper: unexpected message {} from the server", static_cast<int>(msg.type));
  }
}

void Keeper::OnTtyMsg(Msg msg) {
  auto it = ttys_.find(msg.text);
  switch (msg.type) {
    case MsgType::kTtyRelay: {
      // A replayed relay of a name we hold keeps the one running; its fds
      // (copies of the same files) close with msg.
      if (it != ttys_.end()) return;
      size_t expected = 1 + ((msg.arg & kTtyHasIn) ? 1 : 0) + ((msg.arg & kTtyHasOut) ? 1 : 0);
      if (msg.fds.size() != expected) {
        base::LogWarn("keeper: tty {}: {} fds, expected {}; ignored", msg.text, msg.fds.size(),
                expected);
        return;
      }
      size_t next = 0;
      base::UniqueFd master = std::move(msg.fds[next++]);
      base::UniqueFd in = (msg.arg & kTtyHasIn) ? std::move(msg.fds[next++]) : base::UniqueFd();
      base::UniqueFd out = (msg.arg & kTtyHasOut) ? std::move(msg.fds[next++]) : base::UniqueFd();
      auto relay = std::make_unique<TtyRelay>(loop_, msg.text, std::move(master), std::move(in),
                                              std::move(out));
      relay->Start();
      ttys_[msg.text] = std::move(relay);
      return;
    }
    case MsgType::kTtyResize:
      if (it != ttys_.end()) it->second->Resize(msg.arg, static_cast<uint32_t>(msg.conn));
      return;
    case MsgType::kTtyCloseIn:
      if (it != ttys_.end()) it->second->CloseInput();
      return;
    case MsgType::kTtyDrop:
      if (it != ttys_.end()) ttys_.erase(it);
      return;
    default:
      return;
  }
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

void Keeper::Upgrade() {
  base::LogInfo("keeper: upgrading: stopping the server, re-executing {}", config_.self_argv[0]);
  StopServerAndWait();
  // Everything we hold (keeper/upgrade_state.h); fds stay open across execve.
  UpgradeState saved;
  saved.next_conn = next_conn_;
  saved.next_seq = next_seq_;
  for (auto& l : listeners_) saved.listeners.push_back({l->fd.get(), l->label, l->path});
  for (auto& [id, c] : conns_)
    saved.conns.push_back({c.fd.get(), id, c.peer.uid, c.peer.pid, c.label, c.out,
                           std::string(c.decoder.Buffered())});
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
  int mfd = memfd_create("keeper-state", 0);
  if (mfd < 0 ||
      write(mfd, state->data(), state->size()) != static_cast<ssize_t>(state->size())) {
    base::LogError("keeper: upgrade: cannot write the state ({}); going on as before",
             std::strerror(errno));
    if (mfd >= 0) close(mfd);
    GoOnAsBefore();
    SpawnServer();
    return;
  }
  lseek(mfd, 0, SEEK_SET);
  setenv("EMBED_SHIM_KEEPER_RESUME", std::to_string(mfd).c_str(), 1);
  std::vector<char*> argv;
  for (auto& a : config_.self_argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  base::LogError("keeper: upgrade: exec {}: {}; going on as before", argv[0], std::strerror(errno));
  unsetenv("EMBED_SHIM_KEEPER_RESUME");
  close(mfd);
  GoOnAsBefore();
  SpawnServer();
}

absl::Status Keeper::Resume(int state_fd) {
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = read(state_fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(state_fd);
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
    Conn c;
    c.id = saved.id;
    c.fd.Reset(saved.fd);
    c.label = std::move(saved.label);
    c.peer.uid = saved.peer_uid;
    c.peer.pid = saved.peer_pid;
    c.out = std::move(saved.out);
    c.decoder.Feed(saved.partial);
    const uint64_t id = c.id;
    const int fd = c.fd.get();
    const uint32_t events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : uint32_t{EPOLLOUT});
    conns_[id] = std::move(c);
    if (absl::Status st = loop_.Add(fd, events, [this, id](uint32_t ev) { OnConn(id, ev); });
        !st.ok()) {
      base::LogError("keeper: resume: connection {}: {}; closed", id, st);
      conns_.erase(id);
    }
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
