// Helpers of the exit monitor tests: private pin directories, gated child
// processes, and draining with a deadline.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "base/unique_fd.h"
#include "bpf/exit_monitor.h"
#include "bpf/pidfd.h"

namespace bpf_test {

using bpf::ExitMonitor;
using bpf::ExitRecord;

// A fresh pin directory, removed when the test ends however it ends.
struct TestPins {
  TestPins() {
    static std::atomic<int> counter{0};
    dir = fmt::format("/sys/fs/bpf/cse1-test-{}-{}", ::getpid(), counter++);
  }
  ~TestPins() { (void)ExitMonitor::RemovePins(dir); }
  std::string dir;
};

// A pipe that holds children back until the test lets them go.
struct Gate {
  Gate() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r.Reset(fds[0]);
    w.Reset(fds[1]);
  }
  void Open(size_t n = 1) {
    std::string bytes(n, 'x');
    REQUIRE(::write(w.get(), bytes.data(), n) == static_cast<ssize_t>(n));
  }
  base::UniqueFd r, w;
};

inline int64_t Nanos(clockid_t clock) {
  timespec ts;
  ::clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// A forked child that waits at the gate, then runs `body` and exits with
// its return value. Killed and reaped on destruction unless reaped before.
class Child {
 public:
  Child(Gate& gate, std::function<int()> body) {
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      char c;
      if (::read(gate.r.get(), &c, 1) != 1) ::_exit(120);
      ::_exit(body());
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  int Reap() {
    int status = -1;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

// Collects every delivered exit, duplicates included, so tests can count.
struct Collector {
  std::map<pid_t, std::vector<ExitRecord>> by_pid;
  size_t total = 0;
  ExitMonitor::ExitCallback cb() {
    return [this](const ExitRecord& r) {
      by_pid[r.pid].push_back(r);
      ++total;
    };
  }
  size_t count(pid_t pid) const {
    auto it = by_pid.find(pid);
    return it == by_pid.end() ? 0 : it->second.size();
  }
  const ExitRecord& only(pid_t pid) const { return by_pid.at(pid).at(0); }
};

// Every child in `kids` (child i exits with i % 256) was reported exactly
// once, with the status wait(2) gives; each record is then forgotten.
inline void CheckEachReportedOnce(ExitMonitor& m, const Collector& col,
                                  const std::vector<std::unique_ptr<Child>>& kids) {
  CHECK(col.total == kids.size());
  for (size_t i = 0; i < kids.size(); ++i) {
    pid_t pid = kids[i]->pid();
    REQUIRE(col.count(pid) == 1);
    CHECK(col.only(pid).wait_status == static_cast<int>(i % 256) << 8);
    CHECK(kids[i]->Reap() == col.only(pid).wait_status);
    REQUIRE(m.Forget(pid).ok());
  }
}

// Drains on epoll readiness until done() holds or the deadline passes.
inline bool DrainUntil(ExitMonitor& m, Collector& col, const std::function<bool()>& done,
                       std::chrono::seconds timeout = std::chrono::seconds(60)) {
  base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  REQUIRE(ep.valid());
  epoll_event ev{};
  ev.events = EPOLLIN;
  REQUIRE(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, m.fd(), &ev) == 0);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto cb = col.cb();
  for (;;) {
    auto n = m.Drain(cb);
    REQUIRE(n.ok());
    if (done()) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    ::epoll_wait(ep.get(), &ev, 1, static_cast<int>(left.count()));
  }
}

inline std::unique_ptr<ExitMonitor> OpenMonitor(const TestPins& pins,
                                                bpf::OpenOptions options = {}) {
  auto m = ExitMonitor::Open(pins.dir, std::move(options));
  INFO(m.status().ToString());
  REQUIRE(m.ok());
  return std::move(*m);
}

inline std::unique_ptr<ExitMonitor> OpenMonitor(const TestPins& pins, bpf::ExitFlavour flavour) {
  bpf::OpenOptions options;
  options.flavour = flavour;
  return OpenMonitor(pins, std::move(options));
}

// Blocks until a byte arrives on fd, or fails the test after 60 s.
inline void ReadByte(int fd) {
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 60000) == 1);
  char c;
  REQUIRE(::read(fd, &c, 1) == 1);
}

// Blocks until `pid` (a child, not reaped) has exited, or fails the test
// after 60 s. Its exit tracepoint has run by then.
inline void WaitExited(pid_t pid) {
  auto pidfd = bpf::PidfdOpen(pid);
  REQUIRE(pidfd.ok());
  pollfd p{pidfd->get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 60000) == 1);
}

}  // namespace bpf_test
