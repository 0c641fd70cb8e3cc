// Helpers shared by the shim/oci tests: forked children waited on through
// pidfds, fd reads with deadlines, environment variables set for one test.
// Header-only; Catch2 assertions inside.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include <catch2/catch.hpp>

#include "base/unique_fd.h"

namespace oci_test {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds kDeadline{20};

inline int MillisUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, INT_MAX));
}

// poll() one fd until one of `events` (or an error/hangup) shows up or the
// deadline passes. Returns revents, 0 on timeout.
inline short PollFd(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{.fd = fd, .events = events, .revents = 0};
    int n = poll(&p, 1, MillisUntil(deadline));
    if (n > 0) return p.revents;
    if (n == 0 && Clock::now() >= deadline) return 0;
  }
}

// The state right now, without waiting.
inline short PollNow(int fd, short events) {
  pollfd p{.fd = fd, .events = events, .revents = 0};
  return poll(&p, 1, 0) > 0 ? p.revents : 0;
}

// Reads from `fd` until `text` has arrived (true), or EOF/deadline (false).
// What was read is appended to `*got`.
inline bool ReadUntil(int fd, const std::string& text, std::string* got,
                      Clock::time_point deadline) {
  while (got->find(text) == std::string::npos) {
    short ev = PollFd(fd, POLLIN, deadline);
    if (ev == 0) return false;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    got->append(buf, static_cast<size_t>(n));
  }
  return true;
}

// Reads to EOF (true) or the deadline (false).
inline bool ReadToEof(int fd, std::string* got, Clock::time_point deadline) {
  while (true) {
    if (PollFd(fd, POLLIN, deadline) == 0) return false;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    got->append(buf, static_cast<size_t>(n));
  }
}

inline base::UniqueFd PidfdOpen(pid_t pid) {
  return base::UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

// Waits (pidfd + poll, with a deadline) for our child `pid` to exit and
// reaps it; returns the wait status, or -1 on timeout (the child is then
// killed and reaped).
inline int WaitChild(pid_t pid, Clock::time_point deadline) {
  base::UniqueFd pidfd = PidfdOpen(pid);
  REQUIRE(pidfd.valid());
  bool exited = PollFd(pidfd.get(), POLLIN, deadline) != 0;
  if (!exited) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return exited ? status : -1;
}

// Sets (or with nullopt, unsets) an environment variable, and restores it
// when the test ends.
struct ScopedEnv {
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name(name) {
    if (const char* old_value = std::getenv(name)) old = old_value;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old) {
      setenv(name, old->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  const char* name;
  std::optional<std::string> old;
};

// Forks a child that runs `body` and exits with its result. The child must
// stay async-signal-safe-ish: the test process is single-threaded, so plain
// code is fine.
inline pid_t ForkChild(const std::function<int()>& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(body());
  return pid;
}

}  // namespace oci_test
