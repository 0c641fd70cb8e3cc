// PtySession: a process whose controlling terminal is a pty pair the test
// owns, as a person at a terminal would run `ctr run -t` or `ctr task exec -t`.
//
//   absl::StatusOr<std::unique_ptr<PtySession>> s =
//       PtySession::Spawn(cd.CtrArgv({"-n", ns, "run", "-t", ...}), {30, 100});
//   (*s)->Type("echo hi\r");
//   (*s)->WaitFor("hi", DeadlineIn(10s));
//   (*s)->Resize({40, 120});  // the kernel sends SIGWINCH to the session (ctr)
//
// The child runs in a session of its own with the pty's slave as its
// controlling terminal and stdin, stdout and stderr; the test holds the
// master. Everything the child writes is appended to transcript(), read
// whenever the test waits (so the child never blocks on a full pty). Waits
// poll the master and the child's pidfd with a deadline; nothing sleeps.
//
// The destructor SIGKILLs the child's process group and reaps it; the child
// also gets PR_SET_PDEATHSIG(SIGKILL), so a crashed test leaves no ctr behind.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "test/support/subprocess.h"

namespace pty_test {

struct WindowSize {
  unsigned short rows = 24;
  unsigned short cols = 80;
};

class PtySession {
 public:
  // Opens a pty pair of `size`, forks, and execs argv (looked up in PATH)
  // on the slave. CONTAINERD_NAMESPACE and CONTAINERD_ADDRESS are removed
  // from the child's environment, as PrivateContainerd::Ctr does.
  static absl::StatusOr<std::unique_ptr<PtySession>> Spawn(std::vector<std::string> argv,
                                                           WindowSize size);
  ~PtySession();
  PtySession(const PtySession&) = delete;
  PtySession& operator=(const PtySession&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& description() const { return description_; }

  // Writes `keys` to the master, as typed (use "\r" for Enter).
  absl::Status Type(std::string_view keys, test_support::Deadline deadline);
  // Sets the terminal's window size (TIOCSWINSZ on the master). The kernel
  // sends SIGWINCH to the terminal's foreground process group: the child.
  absl::Status Resize(WindowSize size);

  // Everything read from the master so far.
  const std::string& transcript() const { return transcript_; }
  // The transcript's length now: pass it as `from` to wait only for output
  // that comes after this point.
  size_t Mark() const { return transcript_.size(); }

  // Reads until transcript() holds `text` at or after byte `from`; returns
  // the offset just past it. DeadlineExceeded (with the tail of the
  // transcript) at the deadline; FailedPrecondition if the child exits and
  // the master has nothing more to read first.
  absl::StatusOr<size_t> WaitFor(std::string_view text, test_support::Deadline deadline,
                                 size_t from = 0);
  // Waits for the child to exit, reading the master meanwhile, and reaps it.
  absl::StatusOr<test_support::ExitStatus> Wait(test_support::Deadline deadline);

 private:
  PtySession() = default;
  // Reads what is available now (or waits for something until `deadline`).
  // Returns false once the master reports EOF/EIO (no slave left open).
  bool ReadSome(test_support::Deadline deadline);
  absl::StatusOr<test_support::ExitStatus> Reap();

  pid_t pid_ = -1;
  base::UniqueFd pidfd_;
  base::UniqueFd master_;
  bool master_eof_ = false;
  std::optional<test_support::ExitStatus> status_;
  std::string transcript_;
  std::string description_;
};

// `text` with every "\r" removed (a terminal's onlcr turns "\n" into "\r\n").
std::string StripCarriageReturns(std::string_view text);

}  // namespace pty_test
