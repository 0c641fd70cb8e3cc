// Terminals end to end: `ctr run -t sh` and `ctr task exec -t sh` driven
// through a pty pair the test owns (pty_session.h), as a person at a
// terminal would, against io.containerd.runc.v2 and io.containerd.embed.v1
// (see exec_util.h for how the embed variants are gated). What is typed
// reaches the shell, a resize of ctr's terminal reaches the container's
// (ctr forwards SIGWINCH as ResizePty), 5 MB of output arrive intact, and the
// shell's exit code is ctr's.
//
// Every command prints a marker built by the shell ($((...)) or $(...)), so
// the terminal's echo of the typed line can never be taken for its output.
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "test/integration/exec_util.h"
#include "test/integration/pty_session.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace exec_e2e;
using pty_test::PtySession;
using pty_test::WindowSize;

// 3,750,000 random bytes in base64 (76 columns): 5,065,790 bytes of text.
constexpr int kRandomBytes = 3'750'000;
constexpr size_t kBase64Size = 5'065'790;

class Shell {
 public:
  Shell(E2E& e, const Runtime& rt, PtySession& pty) : e_(e), rt_(rt), pty_(pty) {}

  std::string Context() const {
    return fmt::format("terminal transcript (tail):\n{}\nshim log (tail):\n{}",
                       survival::Tail(pty_.transcript(), 3000), survival::Tail(e_.ShimLog(), 3000));
  }

  // Types `line` and Enter; returns the offset just past `expect` in the
  // output that follows.
  size_t Run(const std::string& line, const std::string& expect,
             Clock::duration timeout = 60s) {
    const size_t mark = pty_.Mark();
    const Deadline deadline = DeadlineIn(timeout);
    REQUIRE_OK(pty_.Type(line + "\r", deadline));
    return Expect(expect, mark, deadline);
  }

  size_t Expect(const std::string& text, size_t from, Deadline deadline) {
    absl::StatusOr<size_t> at = pty_.WaitFor(text, deadline, from);
    if (!at.ok()) {
      FailIfUnimplemented(rt_, pty_.transcript());
      SaveTranscript();
    }
    INFO(Context());
    REQUIRE_OK(at);
    return *at;
  }

  // What `stty size` says inside ("rows cols"); `n` makes the marker unique.
  std::string SttySize(int n) {
    const size_t mark = pty_.Mark();
    const Deadline deadline = DeadlineIn(60s);
    REQUIRE_OK(pty_.Type(fmt::format("echo size$(({}+0))-$(stty size)-end\r", n), deadline));
    size_t begin = Expect(fmt::format("size{}-", n), mark, deadline);
    size_t end = Expect("-end", begin, deadline);
    return pty_.transcript().substr(begin, end - 4 - begin);
  }

  // The whole transcript, beside the logs the fixture keeps of a failed case.
  void SaveTranscript() const {
    const std::string dir = CaseLogDir("SHIM_E2E_LOG_DIR", "/tmp/shim-e2e-logs");
    if (!test_support::MakeDirs(dir).ok()) return;
    if (test_support::WriteFile(dir + "/terminal.txt", pty_.transcript()).ok())
      fmt::print(stderr, "tty: the terminal's transcript kept in {}/terminal.txt\n", dir);
  }

 private:
  E2E& e_;
  const Runtime& rt_;
  PtySession& pty_;
};

// The checks shared by `ctr run -t` and `ctr task exec -t`: a shell on the
// terminal of `pty`, started at 30x100.
void DriveShell(E2E& e, const Runtime& rt, PtySession& pty) {
  Shell sh(e, rt, pty);

  // Typed text reaches the shell, and its output comes back.
  const std::string token = UniqueName("hello");
  sh.Run(fmt::format("echo {}-$((6*7))", token), token + "-42");

  // The size ctr's terminal had at the start, then a resize of it.
  {
    std::string size = sh.SttySize(1);
    INFO(sh.Context());
    CHECK(size == "30 100");
  }
  REQUIRE_OK(pty.Resize(WindowSize{40, 120}));
  // ctr forwards the SIGWINCH as a ResizePty of its own, racing with what
  // we type next: ask again until it shows (each try a full round trip).
  std::string size;
  const Deadline resized_by = DeadlineIn(30s);
  for (int n = 2; size != "40 120" && Clock::now() < resized_by; ++n) size = sh.SttySize(n);
  {
    INFO(sh.Context());
    CHECK(size == "40 120");
  }

  // 5 MB of output arrive intact. Each "\n" arrives as "\r\r\n": onlcr of
  // the container's terminal, then of ours (ctr's raw mode keeps OPOST, as
  // containerd/console's SetRaw does); strip them.
  const size_t begin_line = sh.Run(
      fmt::format("head -c {} /dev/urandom | base64 > /tmp/tty-data; "
                  "echo sum-$(md5sum /tmp/tty-data | cut -c1-32)-end; "
                  "echo begin-$((1+1)); cat /tmp/tty-data; echo end-$((1+1))",
                  kRandomBytes),
      "begin-2", 120s);
  const size_t begin = sh.Expect("\n", begin_line, DeadlineIn(60s));
  const size_t end = sh.Expect("end-2", begin, DeadlineIn(120s));
  const std::string data =
      pty_test::StripCarriageReturns(std::string_view(pty.transcript()).substr(begin, end - 5 - begin));
  size_t sum_at = pty.transcript().rfind("sum-", begin);
  REQUIRE(sum_at != std::string::npos);
  const std::string inside = pty.transcript().substr(sum_at + 4, 32);
  SpawnOptions md5sum;
  md5sum.argv = {"md5sum"};
  md5sum.stdin_data = data;
  absl::StatusOr<Result> here = test_support::Run(std::move(md5sum), 60s);
  REQUIRE_OK(here);
  {
    INFO("md5 inside " << inside << ", of what arrived " << here->out);
    CHECK(data.size() == kBase64Size);
    CHECK(here->out.substr(0, 32) == inside);
  }
  sh.Run("rm /tmp/tty-data; echo removed-$((1+1))", "removed-2");

  // The shell's exit code is ctr's.
  REQUIRE_OK(pty.Type("exit 7\r", DeadlineIn(10s)));
  absl::StatusOr<test_support::ExitStatus> st = pty.Wait(DeadlineIn(60s));
  INFO(sh.Context());
  REQUIRE_OK(st);
  CHECK(st->ShellCode() == 7);
}

void RunTty(const Runtime& rt) {
  auto e = E2E::Start();
  const std::string ns = UniqueName("tty");
  const std::string rootfs = e->Rootfs();
  const std::string id = UniqueName("sh");
  absl::StatusOr<std::unique_ptr<PtySession>> pty = PtySession::Spawn(
      e->cd().CtrArgv(RunArgsFor(e->cd(), rt, ns, {"-t", "--rm"}, rootfs, id, {"sh"})),
      {30, 100});
  REQUIRE_OK(pty);
  DriveShell(*e, rt, **pty);
  // --rm removed it.
  CHECK(CtrOk(e->cd(), {"-n", ns, "containers", "ls", "-q"}).empty());
}
EXEC_RUNTIME_CASES("tty: ctr run -t sh: typing, resize, 5 MB out intact, exit 7",
                   "[containerd][tty]", RunTty)

void ExecTty(const Runtime& rt) {
  auto e = E2E::Start();
  const std::string ns = UniqueName("ttyexec");
  const std::string rootfs = e->Rootfs();
  const std::string task = UniqueName("box");
  const pid_t init = RunSleeper(e->cd(), rt, ns, rootfs, task);
  absl::StatusOr<std::unique_ptr<PtySession>> pty = PtySession::Spawn(
      e->cd().CtrArgv(ExecArgs(e->cd(), ns, task, "shell", {"sh"}, {"-t"})), {30, 100});
  REQUIRE_OK(pty);
  DriveShell(*e, rt, **pty);
  // The container goes on, with its init alone.
  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks));
  CHECK(tasks[task].status == "RUNNING");
  CHECK(TaskPids(e->cd(), ns, task) == std::vector<pid_t>{init});
}
EXEC_RUNTIME_CASES("tty: ctr task exec -t sh: typing, resize, 5 MB out intact, exit 7",
                   "[containerd][tty]", ExecTty)

}  // namespace
