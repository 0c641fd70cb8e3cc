// Subprocess: an RAII child process for tests.
//
//   auto p = Subprocess::Spawn({.argv = {"sh", "-c", "echo hi; exit 3"}});
//   if (!p.ok()) ...;
//   absl::StatusOr<ExitStatus> st = p->Wait(std::chrono::seconds(10));
//   p->out();  // "hi\n"
//
// - Every child gets a pidfd; waiting polls the pidfd (no sleeps, no SIGCHLD).
// - Captured stdout/stderr go to unnamed files (O_TMPFILE in $TMPDIR or /tmp;
//   memfd as a fallback), so the child can never block on a full pipe and a
//   daemon that inherits them cannot make us wait for EOF.
//   They can be read at any time (out(), err()) and waited on (WaitForOutput).
// - stdin is /dev/null, given bytes (a memfd), or a pipe (stdin_pipe).
// - The destructor SIGKILLs a child that is still running (and its process
//   group if it got a session of its own) and reaps it.
// - Children get PR_SET_PDEATHSIG (SIGKILL by default), so a crashed test does
//   not leave them behind.
//
// Run(): spawn, wait with a timeout, return exit code and output.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace test_support {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline DeadlineIn(Clock::duration d) { return Clock::now() + d; }

// How a child ended.
struct ExitStatus;
// In a forked child before exec: every signal back to its default and none
// blocked (the test's dispositions and mask must not reach the program).
// Async-signal-safe.
void ResetSignalsInChild();
// Waits for child `pid` to exit and reaps it (EINTR retried).
absl::StatusOr<ExitStatus> ReapChild(pid_t pid, std::string_view description);

struct ExitStatus {
  int code = 0;    // exit code when it exited normally
  int signal = 0;  // terminating signal, 0 if it exited normally
  bool exited() const { return signal == 0; }
  bool success() const { return signal == 0 && code == 0; }
  // The shell's $?: the exit code, or 128 + signal.
  int ShellCode() const { return signal != 0 ? 128 + signal : code; }
  std::string ToString() const;  // "exit 7", "signal 9 (Killed)"
};

// Where a child's stdout or stderr goes.
struct OutputSpec {
  enum class Mode {
    kCapture,   // an unnamed file, read back with out()/err()
    kFile,      // appended to `path` (created 0644)
    kNull,      // /dev/null
    kInherit,   // this process's own stdout/stderr
    kToStdout,  // stderr only: the same file as stdout (2>&1)
  };
  Mode mode = Mode::kCapture;
  std::string path;

  static OutputSpec Capture() { return {}; }
  static OutputSpec File(std::string p) { return {Mode::kFile, std::move(p)}; }
  static OutputSpec Null() { return {Mode::kNull, {}}; }
  static OutputSpec Inherit() { return {Mode::kInherit, {}}; }
  static OutputSpec ToStdout() { return {Mode::kToStdout, {}}; }
};

struct SpawnOptions {
  // argv[0] without a '/' is looked up in the child's PATH.
  std::vector<std::string> argv;
  // Environment overrides on top of this process's environment (or of an
  // empty one with clear_env). A nullopt value removes the variable.
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  bool clear_env = false;
  // Working directory; empty = ours.
  std::string cwd;
  // stdin: the given bytes; nullopt = /dev/null (unless stdin_pipe).
  std::optional<std::string> stdin_data;
  // stdin is a pipe whose write end is Subprocess::stdin_pipe().
  bool stdin_pipe = false;
  OutputSpec out;
  OutputSpec err;
  // setsid() in the child; the destructor then kills the whole group too.
  bool new_session = false;
  // PR_SET_PDEATHSIG for the child; 0 = none.
  int death_signal = SIGKILL;
};

class Subprocess {
 public:
  static absl::StatusOr<Subprocess> Spawn(SpawnOptions options);

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  // Kills (SIGKILL) and reaps the child if it was not reaped yet.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // True until the child was reaped by Wait()/Kill().
  bool running() const { return pid_ > 0 && !status_.has_value(); }
  // The exit status once reaped.
  const std::optional<ExitStatus>& exit_status() const { return status_; }
  // "argv[0] argv[1] ..." for messages.
  const std::string& description() const { return description_; }

  // Waits for the child to exit and reaps it. DeadlineExceeded if it is still
  // running at the deadline (it is left running). Returns the cached status
  // when called again.
  absl::StatusOr<ExitStatus> Wait(Deadline deadline);
  absl::StatusOr<ExitStatus> Wait(Clock::duration timeout) { return Wait(DeadlineIn(timeout)); }
  // Waits without a deadline.
  absl::StatusOr<ExitStatus> Wait();

  // Sends a signal (through the pidfd: never hits a recycled pid).
  absl::Status Signal(int sig);
  // Sends `sig`, waits until the deadline, then SIGKILLs (also the group with
  // new_session) and reaps.
  absl::StatusOr<ExitStatus> Kill(int sig, Deadline deadline);
  absl::StatusOr<ExitStatus> Kill() { return Kill(SIGKILL, Clock::now()); }

  // Captured output so far ("" unless the mode is kCapture).
  std::string out() const;
  std::string err() const;
  // Waits (inotify on the capture file, no polling) until the captured stdout (or
  // stderr) contains `text`. FailedPrecondition if the child exits first,
  // DeadlineExceeded at the deadline.
  absl::Status WaitForOutput(std::string_view text, Deadline deadline, bool from_stderr = false);

  // Write end of the stdin pipe (stdin_pipe = true); Reset() it to send EOF.
  base::UniqueFd& stdin_pipe() { return stdin_pipe_; }

 private:
  absl::StatusOr<ExitStatus> Reap();
  void KillAndReapNow();

  pid_t pid_ = -1;
  base::UniqueFd pidfd_;
  base::UniqueFd out_fd_;  // capture files (kCapture) or invalid
  base::UniqueFd err_fd_;
  base::UniqueFd stdin_pipe_;
  bool new_session_ = false;
  std::optional<ExitStatus> status_;
  std::string description_;
};

// The result of Run(): exit code (shell convention) and captured output.
struct Result {
  int exit_code = -1;  // exit code, or 128 + signal
  int signal = 0;      // terminating signal, 0 if it exited normally
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
  std::string ToString() const;
};
std::ostream& operator<<(std::ostream& os, const Result& r);
std::ostream& operator<<(std::ostream& os, const ExitStatus& s);

// Runs argv (stdout and stderr captured) and waits for it. A child still
// running at the timeout is killed, and DeadlineExceeded (with its output so
// far in the message) is returned. A non-zero exit is NOT an error status:
// check Result::exit_code.
absl::StatusOr<Result> Run(std::vector<std::string> argv,
                           Clock::duration timeout = std::chrono::seconds(60));
absl::StatusOr<Result> Run(SpawnOptions options,
                           Clock::duration timeout = std::chrono::seconds(60));

// Looks `name` up in `path_env` (a PATH value) like execvp does.
absl::StatusOr<std::string> FindInPath(std::string_view name, std::string_view path_env);

// --- process tree helpers (used by fixture teardown) ---

// Marks this process as a child subreaper (PR_SET_CHILD_SUBREAPER): orphans of
// our descendants are re-parented to us instead of to PID 1.
absl::Status BecomeSubreaper();
// Reaps every exited child of this process that no live Subprocess owns
// (orphans re-parented to us as subreaper). Returns how many were reaped.
// Do not call it while other code of this process waits for its own
// fork()ed children by pid.
int ReapOrphans();
// Pids of processes (other than us) whose command line mentions `dir`, or
// whose cwd, root or executable is at or below `dir`; plus all their
// descendants. Zombies are skipped.
std::vector<pid_t> ProcessesReferencing(const std::string& dir);
// Direct children of `pid` (from /proc; zombies included).
std::vector<pid_t> ChildrenOf(pid_t pid);
// SIGKILLs the given pids (through pidfds) and waits until they have exited
// or the deadline passed. Returns the pids still alive.
std::vector<pid_t> KillAndWait(const std::vector<pid_t>& pids, Deadline deadline);

}  // namespace test_support
