// Log URIs through a stock containerd 1.6 and ctr (`ctr run --log-uri`,
// `ctr task exec --log-uri`), as runc-v2 takes them: binary:// runs a
// logger that reads the container's stdout and stderr itself (fds 3 and 4,
// ready on fd 5); file:// appends both streams to one file. Every byte
// arrives, also when the shim's server is SIGKILLed in the middle of the
// output, and the logger is gone, not a zombie, once the task is deleted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "test/integration/survival_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/test_logger.h"

namespace {

using namespace survival;

// About 1 MB in 22000 lines, a stderr line every 1000, and a last line on
// each; in the middle the container waits for a line on /gate.
constexpr int kLines = 22000;
constexpr int kGateAt = 11000;
constexpr int kExitCode = 3;

std::string LineOf(int i) { return fmt::format("line {} abcdefghijklmnopqrstuvwxyz0123456789\n", i); }

std::string ContainerScript() {
  const std::string loop =
      "while [ $i -lt {} ]; do echo \"line $i abcdefghijklmnopqrstuvwxyz0123456789\"; "
      "if [ $((i % 1000)) = 0 ]; then echo \"err $i\" >&2; fi; i=$((i+1)); done; ";
  return "i=0; " + fmt::format(fmt::runtime(loop), kGateAt) + "read x < /gate; " +
         fmt::format(fmt::runtime(loop), kLines) +
         fmt::format("echo 'the last line'; echo 'the last error' >&2; exit {}", kExitCode);
}

struct Expected {
  std::string out, err, both;  // `both`: as one file gets them, in order
};

Expected ExpectedOutput() {
  Expected e;
  for (int i = 0; i < kLines; ++i) {
    e.out += LineOf(i);
    e.both += LineOf(i);
    if (i % 1000 == 0) {
      e.err += fmt::format("err {}\n", i);
      e.both += fmt::format("err {}\n", i);
    }
  }
  e.out += "the last line\n";
  e.err += "the last error\n";
  e.both += "the last line\nthe last error\n";
  return e;
}

// A fifo in the container's rootfs that the container reads one line from:
// held open read-write by the test, so the container's open never blocks
// and its read waits for Release().
struct Gate {
  explicit Gate(const std::string& rootfs) {
    const std::string path = rootfs + "/gate";
    REQUIRE(mkfifo(path.c_str(), 0666) == 0);
    fd.Reset(open(path.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.valid());
  }
  void Release() { REQUIRE(write(fd.get(), "\n", 1) == 1); }
  base::UniqueFd fd;
};

// Waits for the file to hold `text` anywhere.
void WaitForText(const std::string& path, const std::string& text, Survival& s) {
  absl::Status st = WaitForFileText(path, 0, DeadlineIn(60s), [&](std::string_view got) {
    return got.find(text) != std::string_view::npos;
  });
  INFO(s.Logs());
  REQUIRE_OK(st);
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = test_support::ReadFile(path);
  REQUIRE_OK(text);
  return *text;
}

// Gone and reaped: no /proc entry (a zombie keeps one). Whoever reaps
// orphans (tini here) does it as soon as it exits, but not under our eyes:
// checked until a deadline.
bool Reaped(pid_t pid, const base::UniqueFd& pidfd) {
  if (!WaitExited(pidfd, DeadlineIn(10s))) return false;
  Deadline deadline = DeadlineIn(10s);
  while (PathExists(fmt::format("/proc/{}", pid))) {
    if (Clock::now() >= deadline) return false;
    pollfd none{-1, 0, 0};
    poll(&none, 0, 10);
  }
  return true;
}

std::string Describe(pid_t pid) {
  auto stat = test_support::ReadFile(fmt::format("/proc/{}/stat", pid));
  return stat.ok() ? *stat : std::string("(gone)");
}

}  // namespace

TEST_CASE("log uri: binary:// gets every byte of 1 MB across a server SIGKILL; the delete "
          "of a restarted server stops the logger, which is gone, not a zombie",
          "[containerd][log-uri]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("logns");
  const std::string id = UniqueName("logbin");
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  const std::string logdir = s->cd().dir() + "/logger-" + id;
  REQUIRE_OK(test_support::MakeDirs(logdir));
  const std::string logger = s->cd().dir() + "/logger.sh";
  REQUIRE_OK(test_support::InstallTestLogger(logger));
  Gate gate(rootfs);

  // linger: the logger does not leave at EOF, so only the Delete (of the
  // server that did not start it) can end it.
  const std::string uri = fmt::format("binary://{}?dir={}&linger=1", logger, logdir);
  absl::StatusOr<Subprocess> run = s->cd().RunCtrAsync(
      RunArgs(ns, {"--log-uri", uri}, rootfs, id, {"sh", "-c", ContainerScript()}));
  REQUIRE_OK(run);

  WaitForText(logdir + "/stdout", LineOf(kGateAt - 1), *s);
  const pid_t logger_pid = std::stoi(Read(logdir + "/pid"));
  base::UniqueFd logger_fd = OpenPidfd(logger_pid);
  REQUIRE(logger_fd.valid());
  CHECK_FALSE(Exited(logger_fd));
  const std::string env = Read(logdir + "/env");
  CHECK_THAT(env, Catch::Contains("CONTAINER_ID=" + id + "\n"));
  CHECK_THAT(env, Catch::Contains("CONTAINER_NAMESPACE=" + ns + "\n"));

  s->KillServerAndWaitServing();
  gate.Release();

  absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(120s));
  INFO("ctr run: " << run->out() << run->err() << "\n" << s->Logs());
  REQUIRE_OK(st);
  CHECK(st->ShellCode() == kExitCode);

  const Expected expected = ExpectedOutput();
  const std::string out = Read(logdir + "/stdout");
  CHECK(out.size() == expected.out.size());
  CHECK(out == expected.out);
  CHECK(Read(logdir + "/stderr") == expected.err);
  // ctr run deleted the task: the logger had EOF, lingered, got SIGTERM.
  INFO("logger: " << Describe(logger_pid));
  CHECK(Reaped(logger_pid, logger_fd));
  CHECK(Read(logdir + "/events") == "eof\nterm\n");
  CHECK(Contains(s->ShimLog(), fmt::format("logger pid {} did not exit after EOF; SIGTERM", logger_pid)));
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("log uri: a binary:// logger that leaves at EOF needs no signal; the delete waits "
          "for nothing more",
          "[containerd][log-uri]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("logns");
  const std::string id = UniqueName("logeof");
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  const std::string logdir = s->cd().dir() + "/logger-" + id;
  REQUIRE_OK(test_support::MakeDirs(logdir));
  const std::string logger = s->cd().dir() + "/logger.sh";
  REQUIRE_OK(test_support::InstallTestLogger(logger));

  absl::StatusOr<Result> r = s->cd().Ctr(
      RunArgs(ns, {"--log-uri", fmt::format("binary://{}?dir={}", logger, logdir)}, rootfs, id,
              {"sh", "-c", "echo out; echo err >&2; exit 5"}));
  REQUIRE_OK(r);
  INFO(*r << s->Logs());
  CHECK(r->exit_code == 5);
  CHECK(Read(logdir + "/stdout") == "out\n");
  CHECK(Read(logdir + "/stderr") == "err\n");
  const pid_t logger_pid = std::stoi(Read(logdir + "/pid"));
  base::UniqueFd fd = OpenPidfd(logger_pid);
  CHECK((!fd.valid() || Reaped(logger_pid, fd)));
  CHECK(Read(logdir + "/events") == "eof\n");
  CHECK_FALSE(Contains(s->ShimLog(), "did not exit after EOF"));
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("log uri: file:// gets both streams, every byte, across a server SIGKILL",
          "[containerd][log-uri]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("logns");
  const std::string id = UniqueName("logfile");
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  const std::string file = s->cd().dir() + "/logs-" + id + "/deeper/container.log";  // dirs made
  Gate gate(rootfs);

  absl::StatusOr<Subprocess> run = s->cd().RunCtrAsync(
      RunArgs(ns, {"--log-uri", "file://" + file}, rootfs, id, {"sh", "-c", ContainerScript()}));
  REQUIRE_OK(run);
  WaitForText(file, LineOf(kGateAt - 1), *s);
  s->KillServerAndWaitServing();
  gate.Release();

  absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(120s));
  INFO("ctr run: " << run->out() << run->err() << "\n" << s->Logs());
  REQUIRE_OK(st);
  CHECK(st->ShellCode() == kExitCode);
  const std::string got = Read(file);
  CHECK(got.size() == ExpectedOutput().both.size());
  CHECK(got == ExpectedOutput().both);
  struct stat sb;
  REQUIRE(stat(file.c_str(), &sb) == 0);
  CHECK((sb.st_mode & 0777) == 0644);
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("log uri: ctr task exec --log-uri binary:// gives the exec its own logger",
          "[containerd][log-uri]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("logns");
  const std::string id = UniqueName("logexec");
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  const std::string logdir = s->cd().dir() + "/logger-" + id;
  REQUIRE_OK(test_support::MakeDirs(logdir));
  const std::string logger = s->cd().dir() + "/logger.sh";
  REQUIRE_OK(test_support::InstallTestLogger(logger));

  CtrOk(s->cd(), RunArgs(ns, {"-d"}, rootfs, id, {"sleep", "1000000"}));
  absl::StatusOr<Result> r = s->cd().Ctr(
      {"-n", ns, "task", "exec", "--exec-id", "e1", "--log-uri",
       fmt::format("binary://{}?dir={}", logger, logdir), id, "sh", "-c",
       "echo exec out; echo exec err >&2; exit 4"});
  REQUIRE_OK(r);
  INFO(*r << s->Logs());
  CHECK(r->exit_code == 4);
  WaitForText(logdir + "/events", "eof\n", *s);  // nothing waits for an exec's logger
  CHECK(Read(logdir + "/stdout") == "exec out\n");
  CHECK(Read(logdir + "/stderr") == "exec err\n");
  // As runc-v2: an exec's logger is named after the exec.
  CHECK_THAT(Read(logdir + "/env"), Catch::Contains("CONTAINER_ID=e1\n"));
  CtrOk(s->cd(), {"-n", ns, "task", "kill", "-s", "SIGKILL", id});
  test_support::RemoveRuncNamespaceRoot(ns);
}
