// The keeper's terminal relay (keeper/tty_relay.*) through the real
// keeper binary, with real ptys and real fifos.
//
// The keeper's server is keeper_stub_server, which hands the keeper's
// channel to this test: the test then is the keeper's server and drives it
// through keeper::Link, as the real server does. It plays the program
// (the pty's slave) and ctr (the other ends of the fifos), kills the
// "server", and upgrades the keeper under a running relay.
//
// No sleeps: every wait is a poll() with a deadline.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "keeper/channel.h"
#include "keeper/link.h"
#include "keeper/tty_relay.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"
#include "ttrpc/server.h"

namespace {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::Deadline;
using test_support::DeadlineIn;
using test_support::ScopedTempDir;
using test_support::Subprocess;
using keeper::TtyRelay;

constexpr auto kTimeout = 30s;

int MillisUntil(Deadline d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(ms);
}

// poll() on one fd until `events` (or a hang-up) or the deadline; the revents.
short WaitFor(int fd, short events, Deadline deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = poll(&p, 1, MillisUntil(deadline));
    if (r > 0) return p.revents;
    if (r == 0) return 0;
    if (errno != EINTR) return 0;
  }
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Bytes no line discipline or stream shift leaves unchanged by chance.
std::string Pattern(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// Where two byte strings first differ (npos: equal), so a failure names an
// offset instead of printing megabytes.
size_t FirstDifference(std::string_view a, std::string_view b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return i;
  return a.size() == b.size() ? std::string::npos : n;
}

// A pty pair: the master goes to the keeper, the slave is the program's.
struct Pty {
  base::UniqueFd master;
  base::UniqueFd slave;
};

enum class Mode { kRaw, kCanonical };

Pty OpenPty(Mode mode) {
  Pty pty;
  pty.master.Reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  REQUIRE(pty.master);
  REQUIRE(grantpt(pty.master.get()) == 0);
  REQUIRE(unlockpt(pty.master.get()) == 0);
  char name[128];
  REQUIRE(ptsname_r(pty.master.get(), name, sizeof name) == 0);
  pty.slave.Reset(open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  REQUIRE(pty.slave);
  termios t{};
  REQUIRE(tcgetattr(pty.slave.get(), &t) == 0);
  if (mode == Mode::kRaw) {
    cfmakeraw(&t);  // no \n -> \r\n, no echo: bytes pass unchanged
  } else {
    t.c_lflag |= ICANON;
    t.c_lflag &= ~(ECHO | ECHONL);
  }
  REQUIRE(tcsetattr(pty.slave.get(), TCSANOW, &t) == 0);
  return pty;
}

// containerd's fifos for one process: ctr's ends, and the ends the server
// opens and hands to the keeper (stdin's read end; stdout O_RDWR).
struct Fifos {
  base::UniqueFd stdin_writer;   // ctr's
  base::UniqueFd stdout_reader;  // ctr's, non-blocking
  base::UniqueFd keeper_in;
  base::UniqueFd keeper_out;
};

Fifos MakeFifos(const ScopedTempDir& dir, const std::string& name) {
  Fifos f;
  std::string in = dir.Sub(name + "-stdin"), out = dir.Sub(name + "-stdout");
  REQUIRE(mkfifo(in.c_str(), 0600) == 0);
  REQUIRE(mkfifo(out.c_str(), 0600) == 0);
  f.stdout_reader.Reset(open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  f.keeper_out.Reset(open(out.c_str(), O_RDWR | O_CLOEXEC));
  f.keeper_in.Reset(open(in.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  f.stdin_writer.Reset(open(in.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  REQUIRE(f.stdout_reader);
  REQUIRE(f.keeper_out);
  REQUIRE(f.keeper_in);
  REQUIRE(f.stdin_writer);
  return f;
}

// The real keeper binary with keeper_stub_server as its server; the test
// is the server through link().
class KeeperUnderTest {
 public:
  // With `resume_state`, the keeper starts as one after an upgrade, with
  // that state on its stdin (a memfd, as the real one).
  explicit KeeperUnderTest(std::optional<std::string> resume_state = std::nullopt)
      : dir_("keeper-tty-") {
    REQUIRE_OK(dir_.status());
    ctl_.Reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string ctl = dir_.Sub("ctl.sock");
    std::strncpy(addr.sun_path, ctl.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(bind(ctl_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(ctl_.get(), 4) == 0);
    test_support::SpawnOptions o;
    o.argv = {test_support::DefaultShimDir() + "/containerd-shim-embed-v1-keeper",
              dir_.Sub("shim.sock"), log_path(), "--", KEEPER_STUB_SERVER, ctl};
    if (resume_state) {
      o.stdin_data = std::move(resume_state);
      o.env = {{"EMBED_SHIM_KEEPER_RESUME", "0"}};
    }
    absl::StatusOr<Subprocess> k = Subprocess::Spawn(std::move(o));
    REQUIRE_OK(k);
    keeper_ = std::move(*k);
    AcceptServer();
  }
  ~KeeperUnderTest() {
    // A REQUIRE failed (Catch throws): show what the keeper said.
    if (std::uncaught_exceptions() > 0) std::cerr << "--- keeper log ---\n" << Log();
  }

  const ScopedTempDir& dir() const { return dir_; }
  keeper::Link& link() { return *link_; }
  Subprocess& keeper() { return keeper_; }
  std::string log_path() const { return dir_.Sub("keeper.log"); }
  std::string Log() const {
    absl::StatusOr<std::string> text = test_support::ReadFile(log_path());
    return text.ok() ? *text : "";
  }

  // SIGKILLs the current "server", then becomes the one the keeper starts
  // next.
  void KillServer() {
    base::UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, server_pid_, 0)));
    REQUIRE(pidfd);
    REQUIRE(syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) == 0);
    REQUIRE((WaitFor(pidfd.get(), POLLIN, DeadlineIn(kTimeout)) & POLLIN));
    AcceptServer();
  }

  // Asks the keeper to upgrade (it stops the server and re-execs itself),
  // then becomes the server the new keeper starts.
  void Upgrade() {
    const size_t before = Log().size();
    REQUIRE_OK(keeper::SendMsg(channel_.get(), {keeper::MsgType::kUpgrade, 0, 0, {}, {}, {}}));
    AcceptServer();
    INFO(Log());
    REQUIRE(Log().find("keeper: resumed after upgrade", before) != std::string::npos);
  }

 private:
  void AcceptServer() {
    link_.reset();
    server_.reset();
    loop_.reset();
    INFO(Log());
    REQUIRE((WaitFor(ctl_.get(), POLLIN, DeadlineIn(kTimeout)) & POLLIN));
    base::UniqueFd conn(accept4(ctl_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn);
    REQUIRE((WaitFor(conn.get(), POLLIN, DeadlineIn(kTimeout)) & POLLIN));
    char pid[32] = {};
    iovec iov{pid, sizeof pid - 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    REQUIRE(recvmsg(conn.get(), &mh, MSG_CMSG_CLOEXEC) > 0);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    REQUIRE(c != nullptr);
    int fd;
    std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    base::UniqueFd channel(fd);
    server_pid_ = std::atoi(pid);
    REQUIRE(server_pid_ > 0);
    // A copy for what keeper::Link sends only from its running loop (upgrade).
    channel_.Reset(fcntl(channel.get(), F_DUPFD_CLOEXEC, 0));
    auto loop = base::EventLoop::Create();
    REQUIRE_OK(loop);
    loop_ = std::move(*loop);
    server_ = std::make_unique<ttrpc::Server>(*loop_, ttrpc::ServerOptions{});
    link_ = std::make_unique<keeper::Link>(*loop_, std::move(channel), *server_);
    REQUIRE_OK(link_->Start());
  }

  ScopedTempDir dir_;
  base::UniqueFd ctl_;
  Subprocess keeper_;
  pid_t server_pid_ = -1;
  base::UniqueFd channel_;
  std::unique_ptr<base::EventLoop> loop_;
  std::unique_ptr<ttrpc::Server> server_;
  std::unique_ptr<keeper::Link> link_;
};

// The program (the slave) and ctr (the fifos' other ends) at once: `output`
// goes into the slave and must come out of stdout; `input` goes into stdin
// and must come out of the slave. Both in order, each byte once.
class Terminal {
 public:
  Terminal(int slave, int stdout_reader, int stdin_writer, size_t output_size, size_t input_size)
      : slave_(slave),
        reader_(stdout_reader),
        writer_(stdin_writer),
        output_(Pattern(output_size, 1)),
        input_(Pattern(input_size, 2)) {
    SetNonBlocking(slave_);
    SetNonBlocking(reader_);
  }

  // Writes and reads both ways until `output_upto` and `input_upto` bytes
  // are written and every written byte has come out.
  void Pump(size_t output_upto, size_t input_upto) {
    const Deadline deadline = DeadlineIn(kTimeout);
    for (;;) {
      bool write_out = out_written_ < output_upto, write_in = in_written_ < input_upto;
      if (!write_out && !write_in && out_read_.size() == out_written_ &&
          in_read_.size() == in_written_)
        break;
      pollfd p[3] = {{slave_, static_cast<short>(POLLIN | (write_out ? POLLOUT : 0)), 0},
                     {reader_, POLLIN, 0},
                     {writer_, static_cast<short>(write_in ? POLLOUT : 0), 0}};
      int r = poll(p, 3, MillisUntil(deadline));
      INFO("output: " << out_written_ << " written, " << out_read_.size() << " read; input: "
                      << in_written_ << " written, " << in_read_.size() << " read");
      REQUIRE(r > 0);  // else no progress by the deadline
      REQUIRE(Clock::now() < deadline);
      if (p[0].revents & POLLOUT) WriteSome(slave_, output_, out_written_, output_upto);
      if (p[2].revents & POLLOUT) WriteSome(writer_, input_, in_written_, input_upto);
      if (p[0].revents & POLLIN) REQUIRE(ReadSome(slave_, in_read_) > 0);
      if (p[1].revents & (POLLIN | POLLHUP)) REQUIRE(ReadSome(reader_, out_read_) > 0);
    }
    Check();
  }

  // Writes both ways, reading nothing, until `extra` bytes more than the
  // fifo holds are in flight each way. A pty holds about 12 KiB, so with
  // `extra` well above that the keeper's buffers hold the rest.
  void FillPast(size_t extra) {
    const size_t out_target = out_read_.size() + fcntl(reader_, F_GETPIPE_SZ) + extra;
    const size_t in_target = in_read_.size() + fcntl(writer_, F_GETPIPE_SZ) + extra;
    REQUIRE(out_target <= output_.size());
    REQUIRE(in_target <= input_.size());
    const Deadline deadline = DeadlineIn(kTimeout);
    while (out_written_ < out_target || in_written_ < in_target) {
      pollfd p[2] = {{slave_, static_cast<short>(out_written_ < out_target ? POLLOUT : 0), 0},
                     {writer_, static_cast<short>(in_written_ < in_target ? POLLOUT : 0), 0}};
      INFO("output: " << out_written_ << " of " << out_target << " written; input: "
                      << in_written_ << " of " << in_target);
      REQUIRE(poll(p, 2, MillisUntil(deadline)) > 0);
      REQUIRE(Clock::now() < deadline);
      if (p[0].revents & POLLOUT) WriteSome(slave_, output_, out_written_, out_target);
      if (p[1].revents & POLLOUT) WriteSome(writer_, input_, in_written_, in_target);
    }
  }

  // The program closed its terminal: stdout gives the rest, then EOF.
  void ExpectOutputEof() {
    const Deadline deadline = DeadlineIn(kTimeout);
    for (;;) {
      INFO(out_read_.size() << " of " << out_written_ << " output bytes read");
      REQUIRE((WaitFor(reader_, POLLIN, deadline) & (POLLIN | POLLHUP)));
      if (ReadSome(reader_, out_read_) == 0) break;
    }
    Check();
  }

  size_t output_written() const { return out_written_; }
  size_t input_written() const { return in_written_; }
  size_t output_read() const { return out_read_.size(); }
  // Reads from the slave exactly `n` bytes more than the input written so
  // far (what the keeper adds, like VEOF in raw mode) and returns them.
  std::string ReadExtraInput(size_t n) {
    const Deadline deadline = DeadlineIn(kTimeout);
    while (in_read_.size() < in_written_ + n) {
      REQUIRE((WaitFor(slave_, POLLIN, deadline) & POLLIN));
      REQUIRE(ReadSome(slave_, in_read_) > 0);
    }
    REQUIRE(in_read_.size() == in_written_ + n);
    return in_read_.substr(in_written_);
  }

 private:
  static ssize_t WriteSome(int fd, const std::string& data, size_t& written, size_t upto) {
    if (written >= upto) return 0;
    ssize_t n = write(fd, data.data() + written, std::min<size_t>(upto - written, 64 * 1024));
    if (n < 0) {
      REQUIRE(errno == EAGAIN);
      return 0;
    }
    written += static_cast<size_t>(n);
    return n;
  }
  static ssize_t ReadSome(int fd, std::string& into) {
    char buf[64 * 1024];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EAGAIN) return -1;
    REQUIRE(n >= 0);
    into.append(buf, static_cast<size_t>(n));
    return n;
  }
  void Check() {
    INFO("output: " << out_written_ << " written, " << out_read_.size() << " read");
    CHECK(FirstDifference(out_read_, std::string_view(output_).substr(0, out_written_)) ==
          std::string::npos);
    INFO("input: " << in_written_ << " written, " << in_read_.size() << " read");
    CHECK(FirstDifference(std::string_view(in_read_).substr(0, std::min(in_read_.size(),
                                                                       in_written_)),
                          std::string_view(input_).substr(0, in_written_)) == std::string::npos);
  }

  int slave_, reader_, writer_;
  std::string output_, input_;
  size_t out_written_ = 0, in_written_ = 0;
  std::string out_read_, in_read_;
};

// Reads one line from a canonical-mode slave ("" at a read of 0: VEOF).
std::string ReadLine(int slave) {
  REQUIRE((WaitFor(slave, POLLIN, DeadlineIn(kTimeout)) & POLLIN));
  char buf[4096];
  ssize_t n = read(slave, buf, sizeof buf);
  REQUIRE(n >= 0);
  return std::string(buf, static_cast<size_t>(n));
}

void WriteAll(int fd, std::string_view bytes) {
  REQUIRE(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
}

struct IgnoreSigpipe {
  IgnoreSigpipe() { signal(SIGPIPE, SIG_IGN); }
} ignore_sigpipe;

constexpr size_t kFiveMiB = 5u << 20;

}  // namespace

TEST_CASE("keeper tty: 5 MiB out and 1 MiB in arrive intact, then EOF when the program closes",
          "[tty]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kRaw);
  Fifos f = MakeFifos(k.dir(), "big");
  k.link().RelayTty("tty/ns/big/", std::move(pty.master), std::move(f.keeper_in),
                    std::move(f.keeper_out));
  Terminal t(pty.slave.get(), f.stdout_reader.get(), f.stdin_writer.get(), kFiveMiB, 1u << 20);
  t.Pump(kFiveMiB, 1u << 20);
  pty.slave.Reset();  // the program and its children are gone
  t.ExpectOutputEof();
  CHECK(t.output_read() == kFiveMiB);
}

TEST_CASE("keeper tty: typed lines reach the program; resize, then CloseTtyInput gives EOF",
          "[tty]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kCanonical);
  Fifos f = MakeFifos(k.dir(), "typed");
  const std::string name = "tty/ns/typed/exec1";
  k.link().RelayTty(name, std::move(pty.master), std::move(f.keeper_in),
                    std::move(f.keeper_out));
  WriteAll(f.stdin_writer.get(), "hello world\n");
  CHECK(ReadLine(pty.slave.get()) == "hello world\n");

  // A line still in the fifo when CloseTtyInput comes is delivered first,
  // then VEOF: the program's next read returns 0.
  k.link().ResizeTty(name, 132, 43);
  WriteAll(f.stdin_writer.get(), "last line\n");
  k.link().CloseTtyInput(name);
  k.link().CloseTtyInput(name);  // idempotent: one EOF only
  CHECK(ReadLine(pty.slave.get()) == "last line\n");
  CHECK(ReadLine(pty.slave.get()).empty());
  // The keeper handles messages in order: the resize came before the EOF.
  winsize ws{};
  REQUIRE(ioctl(pty.slave.get(), TIOCGWINSZ, &ws) == 0);
  CHECK(ws.ws_col == 132);
  CHECK(ws.ws_row == 43);
  // The keeper closed stdin's read end, the only one.
  CHECK(write(f.stdin_writer.get(), "x", 1) == -1);
  CHECK(errno == EPIPE);
  // Nothing more came: no second VEOF.
  pollfd p{pty.slave.get(), POLLIN, 0};
  CHECK(poll(&p, 1, 0) == 0);
}

TEST_CASE("keeper tty: DropTty closes all; a repeated RelayTty and unknown names are ignored",
          "[tty]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kRaw);
  Fifos f = MakeFifos(k.dir(), "drop");
  const std::string name = "tty/ns/drop/";
  k.link().RelayTty(name, std::move(pty.master), {}, std::move(f.keeper_out));

  // A replayed RelayTty for a name the keeper holds: its fds are closed,
  // the running relay stays.
  Pty other = OpenPty(Mode::kRaw);
  Fifos g = MakeFifos(k.dir(), "again");
  k.link().RelayTty(name, std::move(other.master), {}, std::move(g.keeper_out));
  CHECK((WaitFor(g.stdout_reader.get(), POLLIN, DeadlineIn(kTimeout)) & POLLHUP));
  CHECK((WaitFor(other.slave.get(), POLLIN, DeadlineIn(kTimeout)) & POLLHUP));

  k.link().ResizeTty("tty/none", 1, 1);
  k.link().CloseTtyInput("tty/none");
  k.link().DropTty("tty/none");

  Terminal t(pty.slave.get(), f.stdout_reader.get(), f.stdin_writer.get(), 64 * 1024, 0);
  t.Pump(64 * 1024, 0);
  k.link().DropTty(name);
  k.link().DropTty(name);
  // Both ends hang up: ctr sees EOF, the program sees its terminal gone.
  t.ExpectOutputEof();
  CHECK((WaitFor(pty.slave.get(), POLLIN, DeadlineIn(kTimeout)) & POLLHUP));
  CHECK(k.keeper().running());
}

TEST_CASE("keeper tty: a relay goes on when the server is killed", "[tty][survival]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kRaw);
  Fifos f = MakeFifos(k.dir(), "kill");
  const std::string name = "tty/ns/kill/";
  k.link().RelayTty(name, std::move(pty.master), std::move(f.keeper_in),
                    std::move(f.keeper_out));
  Terminal t(pty.slave.get(), f.stdout_reader.get(), f.stdin_writer.get(), kFiveMiB, 1u << 20);
  t.Pump(1u << 20, 256 * 1024);
  t.FillPast(TtyRelay::kBufferSize / 2);  // bytes in the keeper's buffers

  k.KillServer();
  // The new server learns of the relay from the keeper's hello.
  CHECK(k.link().ttys().contains(name));
  t.Pump(kFiveMiB, 1u << 20);
  pty.slave.Reset();
  t.ExpectOutputEof();
  CHECK(t.output_read() == kFiveMiB);
}

TEST_CASE("keeper tty: a relay goes on across a keeper upgrade, with its buffered bytes",
          "[tty][upgrade]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kRaw);
  Fifos f = MakeFifos(k.dir(), "upgrade");
  const std::string name = "tty/ns/upgrade/exec-1";
  k.link().RelayTty(name, std::move(pty.master), std::move(f.keeper_in),
                    std::move(f.keeper_out));
  Terminal t(pty.slave.get(), f.stdout_reader.get(), f.stdin_writer.get(), kFiveMiB, 1u << 20);
  t.Pump(1u << 20, 256 * 1024);
  // Nobody reads: the fifos fill, then the keeper's buffers (then the
  // pty). The upgrade finds bytes in the keeper's buffers both ways.
  t.FillPast(TtyRelay::kBufferSize / 2);

  const size_t before = k.Log().size();
  k.Upgrade();
  const std::string log = k.Log().substr(before);
  INFO(log);
  CHECK(log.find("1 terminals") != std::string::npos);
  const size_t at = log.find("carries ");
  REQUIRE(at != std::string::npos);
  unsigned long to_stdout = 0, to_terminal = 0;
  REQUIRE(std::sscanf(log.c_str() + at, "carries %lu bytes for stdout, %lu for the terminal",
                      &to_stdout, &to_terminal) == 2);
  CHECK(to_stdout > 0);
  CHECK(to_terminal > 0);
  CHECK(k.link().ttys().contains(name));
  t.Pump(kFiveMiB, 1u << 20);

  // The new keeper's relay answers the new server: in raw mode VEOF is
  // just a byte (^D) after the rest of stdin.
  k.link().CloseTtyInput(name);
  CHECK(t.ReadExtraInput(1) == "\x04");
  pty.slave.Reset();
  t.ExpectOutputEof();
  CHECK(t.output_read() == kFiveMiB);
}

TEST_CASE("keeper tty: a stdout whose reader left neither kills nor stalls the keeper", "[tty]") {
  KeeperUnderTest k;
  Pty pty = OpenPty(Mode::kRaw);
  // A write-only stdout (not the O_RDWR the server uses): once its reader
  // is gone, writes fail with EPIPE.
  std::string out = k.dir().Sub("gone-stdout");
  REQUIRE(mkfifo(out.c_str(), 0600) == 0);
  base::UniqueFd reader(open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  base::UniqueFd writer(open(out.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  REQUIRE(writer);
  k.link().RelayTty("tty/ns/gone/", std::move(pty.master), {}, std::move(writer));
  reader.Reset();

  // 1 MiB into the terminal goes through: the keeper drops what nobody
  // takes instead of blocking the program (or dying of SIGPIPE).
  std::string data = Pattern(1u << 20, 3);
  size_t written = 0;
  const Deadline deadline = DeadlineIn(kTimeout);
  SetNonBlocking(pty.slave.get());
  while (written < data.size()) {
    INFO(written << " bytes written");
    REQUIRE((WaitFor(pty.slave.get(), POLLOUT, deadline) & POLLOUT));
    ssize_t n = write(pty.slave.get(), data.data() + written, data.size() - written);
    REQUIRE((n > 0 || errno == EAGAIN));  // EIO: the keeper closed the master
    if (n > 0) written += static_cast<size_t>(n);
  }
  CHECK(k.keeper().running());
  // And it still serves: a new server after a kill gets its hello.
  k.KillServer();
  CHECK(k.link().ttys().contains("tty/ns/gone/"));
  CHECK(k.Log().find("dropping the output") != std::string::npos);
}

TEST_CASE("keeper: a corrupt upgrade state is logged and kept; the keeper starts afresh",
          "[upgrade]") {
  auto [state, complaint] = GENERATE(table<std::string, std::string>({
      // Version 0 (no header), as keepers before versioning wrote it.
      {"next 1 1\ntty zz -1 -1 -1 0 - -\n", "line 2: a malformed 'tty' line"},
      {"next 1 1\ntty 6162 987 -1 -1 0 - -\n", "fd 987 is not open in the new keeper"},
      {"next 1 1\ntty 6162 -1 -1 -1 2 - -\n", "line 2: a malformed 'tty' line"},
      {"next 1 1\ntty 6162 -1 -1 -1 0 abc -\n", "line 2: a malformed 'tty' line"},
      {"next 1 1\ntty 6162 -1 -1 -1 0 - - extra\n", "line 2: a malformed 'tty' line"},
      {"next one 1\n", "line 1: expected a well-formed 'next' line"},
      {"next 1 2\npending 1 2 3 xyz\n", "line 2: a malformed 'pending' line"},
      {"conn 5\n", "line 1: expected a well-formed 'next' line"},
      // Version 1: unknown versions, truncation, junk after the end.
      {"embedshim-keeper-state 9\nnext 1 1\nend 1\n", "line 1: version 9"},
      {"embedshim-keeper-state 1\nnext 1 1\n", "no 'end' line: the state is truncated"},
      {"embedshim-keeper-state 1\nnext 1 1\nkept 7 a\nend 1\n", "line 4: the end counts 1 lines"},
      {"embedshim-keeper-state 1\nnext 1 1\nend 1\nnext 1 1\n", "line 4: something after"},
      {"embedshim-keeper-state 1\nnext 1 1\nend", "line 3: no newline at its end"},
  }));
  INFO(state);
  // The keeper starting its first server is the proof it went on.
  KeeperUnderTest k(state);
  INFO(k.Log());
  CHECK(k.Log().find("keeper: cannot resume after the upgrade (DATA_LOSS: the upgrade state "
                     "from the previous keeper: " +
                     complaint) != std::string::npos);
  CHECK(k.Log().find("starting afresh") != std::string::npos);
  // The state is kept beside the socket for whoever looks into why.
  bool kept = false;
  for (const auto& entry : std::filesystem::directory_iterator(k.dir().path()))
    kept |= entry.path().filename().string().starts_with("upgrade-state.corrupt-");
  CHECK(kept);
  // It listens on the main socket again.
  base::UniqueFd client(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, k.dir().Sub("shim.sock").c_str(), sizeof addr.sun_path - 1);
  CHECK(connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  CHECK(k.keeper().running());
}
