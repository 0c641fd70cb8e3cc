// Runc against a fake runtime: a shell script named "runc" that records how
// it was run and plays back output, log entries and exit codes. No root.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "shim/oci/runc.h"
#include "test/oci/oci_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using oci_test::ScopedEnv;
using shim::oci::ChildStdio;
using shim::oci::CreateOptions;
using shim::oci::ExecOptions;
using shim::oci::Runc;
using shim::oci::RuncConfig;
using test_support::ReadFile;
using test_support::ScopedTempDir;
using test_support::SplitLines;
using test_support::WriteFile;

// A temp dir with an executable `runc` script in it: a preamble that appends
// its arguments (one line per call) to <dir>/calls, then `body`.
struct FakeRuntime {
  explicit FakeRuntime(const std::string& body) {
    REQUIRE_OK(dir.status());
    binary = dir.Sub("runc");
    log = dir.Sub("log.json");
    std::string script = fmt::format(
        "#!/bin/sh\n"
        "echo \"$*\" >> '{}'\n"
        "for a; do last=$a; done\n"  // $last: the last argument
        "{}\n",
        dir.Sub("calls"), body);
    REQUIRE_OK(WriteFile(binary, script, 0755));
  }
  RuncConfig Config() const {
    RuncConfig c;
    c.binary = binary;
    c.root = "/run/test-root/ns";
    c.log_path = log;
    return c;
  }
  std::vector<std::string> Calls() const {
    auto text = ReadFile(dir.Sub("calls"));
    return text.ok() ? SplitLines(*text) : std::vector<std::string>{};
  }

  ScopedTempDir dir;
  std::string binary, log;
};

TEST_CASE("Runc: global flags and each command's arguments", "[unit]") {
  FakeRuntime fake("[ \"$1\" = --root ] || exit 99\ncase \"$*\" in *' ps '*) echo '[]';; esac");
  RuncConfig config = fake.Config();
  config.systemd_cgroup = true;
  Runc runc(config);

  REQUIRE_OK(runc.Create("c1", "/b", "/b/init.pid", ChildStdio{}, true, true));
  REQUIRE_OK(runc.Create("c2", "/b2", "/b2/init.pid", ChildStdio{}));
  REQUIRE_OK(runc.Start("c1"));
  REQUIRE_OK(runc.Kill("c1", 9, true));
  REQUIRE_OK(runc.Kill("c1", 15, false));
  REQUIRE_OK(runc.Delete("c1", true));
  REQUIRE_OK(runc.Delete("c1", false));
  REQUIRE_OK(runc.Ps("c1"));

  const std::string g = "--root /run/test-root/ns --log " + fake.log + " --log-format json --systemd-cgroup";
  std::vector<std::string> want = {
      g + " create --bundle /b --pid-file /b/init.pid --no-pivot --no-new-keyring c1",
      g + " create --bundle /b2 --pid-file /b2/init.pid c2",
      g + " start c1",
      g + " kill --all c1 9",
      g + " kill c1 15",
      g + " delete --force c1",
      g + " delete c1",
      g + " ps --format json c1",
  };
  CHECK(fake.Calls() == want);
}

// Names in `dir`, to see that nothing was left behind.
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename());
  }
  return names;
}

TEST_CASE("Runc: exec's command line; its process file holds the JSON given, gone after",
          "[unit]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  ScopedEnv xdg("XDG_RUNTIME_DIR", tmp.path());
  // Keeps each --process file's name and a copy of it, numbered by call.
  FakeRuntime fake(
      "n=$(wc -l < \"$FAKE_DIR/calls\")\n"
      "prev=\n"
      "for a; do\n"
      "  if [ \"$prev\" = --process ]; then\n"
      "    echo \"$a\" > \"$FAKE_DIR/process-path.$n\"; cat \"$a\" > \"$FAKE_DIR/process.$n\"\n"
      "  fi\n"
      "  prev=$a\n"
      "done");
  ScopedEnv dir("FAKE_DIR", fake.dir.path());
  Runc runc(fake.Config());

  // Bytes a re-encoding would change: escapes, spacing, UTF-8, no final newline.
  const std::string json1 =
      "{\"args\": [\"sh\", \"-c\", \"echo \\\"hi\\u0021\\\"\"],\n"
      "  \"env\":[\"PATH=/bin\",\"A=\xc3\xa9 b\"], \"cwd\":\"/\", \"terminal\":true}";
  const std::string json2 = "{\"args\":[\"true\"],\"cwd\":\"/\"}\n";
  ExecOptions options;
  options.process_json = json1;
  options.pid_file = "/b/e1.pid";
  options.console_socket = "/run/x/pty.sock";
  REQUIRE_OK(runc.Exec("c1", options, ChildStdio{}));
  options.process_json = json2;
  options.pid_file = "/b/e2.pid";
  options.console_socket.clear();
  REQUIRE_OK(runc.Exec("c2", options, ChildStdio{}));
  CreateOptions create;
  create.pid_file = "/b/init.pid";
  create.console_socket = "/run/y/pty.sock";
  create.no_new_keyring = true;
  REQUIRE_OK(runc.Create("c3", "/b", create, ChildStdio{}));

  std::string paths[2];
  for (int i = 0; i < 2; ++i) {
    auto path = ReadFile(fake.dir.Sub(fmt::format("process-path.{}", i + 1)));
    REQUIRE_OK(path);
    paths[i] = SplitLines(*path).at(0);
    CHECK_THAT(paths[i], Catch::StartsWith(tmp.path() + "/runc-process"));
    CHECK(access(paths[i].c_str(), F_OK) != 0);  // removed
  }
  CHECK(ReadFile(fake.dir.Sub("process.1")).value_or("") == json1);
  CHECK(ReadFile(fake.dir.Sub("process.2")).value_or("") == json2);
  CHECK(Entries(tmp.path()).empty());

  const std::string g = "--root /run/test-root/ns --log " + fake.log + " --log-format json";
  std::vector<std::string> want = {
      g + " exec --process " + paths[0] +
          " --console-socket /run/x/pty.sock --detach --pid-file /b/e1.pid c1",
      g + " exec --process " + paths[1] + " --detach --pid-file /b/e2.pid c2",
      g + " create --bundle /b --pid-file /b/init.pid --console-socket /run/y/pty.sock "
          "--no-new-keyring c3",
  };
  CHECK(fake.Calls() == want);
}

TEST_CASE("Runc: exec's on_spawned gets the runtime's pid before the runtime runs", "[unit]") {
  // The runtime reports the marker the hook wrote, and its own pid.
  FakeRuntime fake("echo \"marker=$(cat \"$FAKE_DIR/marker\") pid=$$\" > \"$FAKE_DIR/seen\"");
  ScopedEnv dir("FAKE_DIR", fake.dir.path());
  char self_exe[PATH_MAX] = {};
  REQUIRE(readlink("/proc/self/exe", self_exe, sizeof self_exe - 1) > 0);

  pid_t hook_pid = 0;
  std::string exe_at_hook;
  ExecOptions options;
  options.process_json = "{}";
  options.pid_file = "/b/e.pid";
  options.on_spawned = [&](pid_t pid) -> absl::Status {
    hook_pid = pid;
    char exe[PATH_MAX] = {};
    if (readlink(fmt::format("/proc/{}/exe", pid).c_str(), exe, sizeof exe - 1) > 0) {
      exe_at_hook = exe;
    }
    return WriteFile(fake.dir.Sub("marker"), "hook-ran");
  };
  REQUIRE_OK(Runc(fake.Config()).Exec("c1", options, ChildStdio{}));

  REQUIRE(hook_pid > 0);
  // Still a copy of this test, not yet the runtime (/bin/sh for the script).
  CHECK(exe_at_hook == self_exe);
  CHECK(ReadFile(fake.dir.Sub("seen")).value_or("") ==
        fmt::format("marker=hook-ran pid={}\n", hook_pid));
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // reaped
}

TEST_CASE("Runc: a failing on_spawned stops exec: runtime killed unrun, the hook's error",
          "[unit]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  ScopedEnv xdg("XDG_RUNTIME_DIR", tmp.path());
  FakeRuntime fake("");
  pid_t hook_pid = 0;
  ExecOptions options;
  options.process_json = "{}";
  options.pid_file = "/b/e.pid";
  options.on_spawned = [&](pid_t pid) {
    hook_pid = pid;
    return absl::ResourceExhaustedError("exit monitor full");
  };
  absl::Status s = Runc(fake.Config()).Exec("c1", options, ChildStdio{});
  CHECK(s == absl::ResourceExhaustedError("exit monitor full"));
  CHECK(hook_pid > 0);
  CHECK(fake.Calls().empty());
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // killed and reaped
  CHECK(errno == ECHILD);
  CHECK(Entries(tmp.path()).empty());  // no process file left
}

TEST_CASE("Runc: exec errors with a hook: the runtime's message, or a binary that cannot run",
          "[unit]") {
  int hook_calls = 0;
  ExecOptions options;
  options.process_json = "{}";
  options.pid_file = "/b/e.pid";
  options.on_spawned = [&](pid_t) {
    ++hook_calls;
    return absl::OkStatus();
  };

  SECTION("the runtime's log error") {
    FakeRuntime fake(
        "echo '{\"level\":\"error\",\"msg\":\"exec failed: no such file\"}' >> \"$FAKE_LOG\"\n"
        "exit 1");
    ScopedEnv env("FAKE_LOG", fake.log);
    absl::Status s = Runc(fake.Config()).Exec("c1", options, ChildStdio{});
    CHECK(s.code() == absl::StatusCode::kUnknown);
    CHECK(std::string(s.message()) == "runc exec: exec failed: no such file");
  }
  SECTION("an execve that fails in the child comes back through the error pipe") {
    ScopedTempDir dir;
    REQUIRE_OK(dir.status());
    REQUIRE_OK(WriteFile(dir.Sub("runc"), "#!/nonexistent/interpreter\n", 0755));
    RuncConfig config;
    config.binary = dir.Sub("runc");
    absl::Status s = Runc(config).Exec("c1", options, ChildStdio{});
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.message()),
               Catch::StartsWith("runc exec: cannot execute '" + dir.Sub("runc")));
  }
  CHECK(hook_calls == 1);
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
}

TEST_CASE("Runc: no --log without a log path, no --root without a root", "[unit]") {
  FakeRuntime fake("");
  RuncConfig config = fake.Config();
  config.log_path.clear();
  REQUIRE_OK(Runc(config).Start("c1"));
  config.root.clear();
  REQUIRE_OK(Runc(config).Start("c2"));
  CHECK(fake.Calls() == std::vector<std::string>{"--root /run/test-root/ns start c1", "start c2"});
}

TEST_CASE("Runc: Ps returns the pids the runtime prints", "[unit]") {
  FakeRuntime fake("case \"$last\" in a) echo '[12, 34]';; b) echo null;; *) echo 'garbage';; esac");
  Runc runc(fake.Config());
  auto pids = runc.Ps("a");
  REQUIRE_OK(pids);
  CHECK(*pids == std::vector<pid_t>{12, 34});
  pids = runc.Ps("b");
  REQUIRE_OK(pids);
  CHECK(pids->empty());
  pids = runc.Ps("c");
  CHECK(pids.status().code() == absl::StatusCode::kUnknown);
  CHECK_THAT(std::string(pids.status().message()), Catch::Contains("garbage"));
}

TEST_CASE("Runc: the error is this call's last log.json error, as NotFound when gone", "[unit]") {
  FakeRuntime fake(
      "echo '{\"level\":\"info\",\"msg\":\"hello\"}' >> \"$FAKE_LOG\"\n"
      "echo '{\"level\":\"error\",\"msg\":\"container \\\"c1\\\" does not exist\"}' >> \"$FAKE_LOG\"\n"
      "echo 'stderr says something else' >&2\n"
      "exit 1");
  ScopedEnv env("FAKE_LOG", fake.log);
  // An older failure in the same log must not be blamed on this call.
  REQUIRE_OK(WriteFile(fake.log, "{\"level\":\"error\",\"msg\":\"old failure\"}\n"));
  absl::Status s = Runc(fake.Config()).Kill("c1", 9, false);
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(std::string(s.message()) == "runc kill: container \"c1\" does not exist");
}

TEST_CASE("Runc: update reads the resources JSON on its stdin; its error is runc's", "[unit]") {
  // The fake copies its stdin to <dir>/stdin, and refuses a limit of 1 as
  // runc does: an error entry in log.json.
  FakeRuntime fake(
      "d=$(dirname \"$0\")\n"
      "cat > \"$d/stdin\"\n"
      "grep -q '\"limit\":1}' \"$d/stdin\" || exit 0\n"
      "echo '{\"level\":\"error\",\"msg\":\"invalid memory limit\"}' >> \"$d/log.json\"\n"
      "exit 1");
  Runc runc(fake.Config());
  const std::string resources = R"({"memory":{"limit":67108864},"cpu":{"shares":512}})";
  REQUIRE_OK(runc.Update("c1", resources));
  CHECK(ReadFile(fake.dir.Sub("stdin")).value() == resources);  // byte for byte
  CHECK(fake.Calls().back() == "--root /run/test-root/ns --log " + fake.log +
                                   " --log-format json update --resources - c1");

  absl::Status s = runc.Update("c1", R"({"memory":{"limit":1}})");
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK(std::string(s.message()) == "runc update: invalid memory limit");
}

TEST_CASE("Runc: without a new log error, stderr is the message; else the exit status", "[unit]") {
  FakeRuntime fake(
      "case \"$last\" in\n"
      "  talk) echo '  boom: cannot do it  ' >&2; exit 1;;\n"
      "  quiet) exit 7;;\n"
      "  signal) kill -TERM $$;;\n"
      "esac");
  REQUIRE_OK(WriteFile(fake.log, "{\"level\":\"error\",\"msg\":\"old failure\"}\n"));
  Runc runc(fake.Config());

  absl::Status s = runc.Delete("talk", false);
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK(std::string(s.message()) == "runc delete: boom: cannot do it");

  s = runc.Start("quiet");
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK(std::string(s.message()) == "runc start: exit status 7");

  s = runc.Start("signal");
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK_THAT(std::string(s.message()), Catch::StartsWith("runc start: killed by signal 15"));
}

TEST_CASE("Runc: the binary is looked up in PATH; a missing one is FailedPrecondition", "[unit]") {
  FakeRuntime fake("");
  const char* old_path = std::getenv("PATH");
  ScopedEnv path("PATH", fake.dir.path() + ":" + (old_path != nullptr ? old_path : "/usr/bin:/bin"));

  RuncConfig config = fake.Config();
  config.binary = "runc";  // our fake, first in PATH
  REQUIRE_OK(Runc(config).Start("c1"));
  CHECK(fake.Calls().size() == 1);

  config.binary = "";  // an unset binary_name means runc
  REQUIRE_OK(Runc(config).Start("c2"));
  CHECK(fake.Calls().size() == 2);

  config.binary = "no-such-runtime-for-oci-test";
  absl::Status s = Runc(config).Start("c1");
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(s.message()) == "runc binary 'no-such-runtime-for-oci-test' not found in PATH");

  config.binary = fake.dir.Sub("missing/runc");
  CHECK(Runc(config).Start("c1").code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("Runc: a binary that cannot be executed is FailedPrecondition", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  // Executable bits, but its interpreter does not exist: execve fails.
  REQUIRE_OK(WriteFile(dir.Sub("runc"), "#!/nonexistent/interpreter\n", 0755));
  RuncConfig config;
  config.binary = dir.Sub("runc");
  absl::Status s = Runc(config).Start("c1");
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(s.message()), Catch::StartsWith("runc start: cannot execute '" + dir.Sub("runc")));
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // the failed child was reaped
}

TEST_CASE("Runc: a runtime that hangs is killed at the timeout and reaped", "[unit]") {
  FakeRuntime fake("exec sleep 600");
  RuncConfig config = fake.Config();
  config.timeout = std::chrono::milliseconds(300);
  const auto start = oci_test::Clock::now();
  absl::Status s = Runc(config).Kill("c1", 9, false);
  CHECK(s.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(oci_test::Clock::now() - start < std::chrono::seconds(30));
  // Reaped: this process has no child left (not even a zombie).
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

TEST_CASE("Runc: create and exec get the given stdio and nothing else; clean env, signals",
          "[unit]") {
  // exec with a hook takes the fork() path, the rest vfork().
  const bool exec = GENERATE(false, true);
  test_support::ScopedTempDir io;
  REQUIRE_OK(io.status());
  // An fd leaked without O_CLOEXEC, at a number the shell does not use.
  base::UniqueFd null_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  base::UniqueFd leak(fcntl(null_fd.get(), F_DUPFD, 100));
  REQUIRE(leak.valid());
  FakeRuntime fake(fmt::format(
      "read line; echo \"stdin=$line\"\n"
      "echo \"notify=${{NOTIFY_SOCKET-unset}}\"\n"
      "if [ -e /proc/$$/fd/{} ]; then echo leaked; else echo no-leak; fi\n"
      // Builtins only: the shell's own state as we started it (dash blocks
      // signals while it waits for a child).
      "while read -r l; do case $l in SigBlk*|SigIgn*) echo \"$l\";; esac; done < /proc/$$/status\n"
      "echo to-stderr >&2",
      leak.get()));
  ScopedEnv notify("NOTIFY_SOCKET", "/run/systemd/notify");
  // The shim ignores SIGPIPE and may block signals; the runtime must not inherit that.
  struct sigaction ignore {}, old_pipe {};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGPIPE, &ignore, &old_pipe) == 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  REQUIRE(pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);

  REQUIRE_OK(WriteFile(io.Sub("in"), "line-in\n"));
  ChildStdio stdio;
  stdio.in.Reset(open(io.Sub("in").c_str(), O_RDONLY | O_CLOEXEC));
  stdio.out.Reset(open(io.Sub("out").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  stdio.err.Reset(open(io.Sub("err").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  absl::Status s;
  if (exec) {
    ExecOptions options;
    options.process_json = "{}";
    options.pid_file = "/b/e.pid";
    options.on_spawned = [](pid_t) { return absl::OkStatus(); };
    s = Runc(fake.Config()).Exec("c1", options, std::move(stdio));
  } else {
    s = Runc(fake.Config()).Create("c1", "/b", "/b/pid", std::move(stdio));
  }

  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  sigaction(SIGPIPE, &old_pipe, nullptr);
  REQUIRE_OK(s);

  auto out = ReadFile(io.Sub("out"));
  REQUIRE_OK(out);
  CHECK(SplitLines(*out) == std::vector<std::string>{
                               "stdin=line-in", "notify=unset", "no-leak",
                               "SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"});
  auto err = ReadFile(io.Sub("err"));
  REQUIRE_OK(err);
  CHECK(*err == "to-stderr\n");
}

TEST_CASE("Runc: create without stdio gives the runtime /dev/null", "[unit]") {
  FakeRuntime fake(
      // In a command substitution, so that no redirection touches the shell's own fds.
      "fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2)\n"
      "echo \"$fds\" > \"$FAKE_DIR/fds\"");
  ScopedEnv dir("FAKE_DIR", fake.dir.path());
  REQUIRE_OK(Runc(fake.Config()).Create("c1", "/b", "/b/pid", ChildStdio{}));
  auto fds = ReadFile(fake.dir.Sub("fds"));
  REQUIRE_OK(fds);
  CHECK(SplitLines(*fds) == std::vector<std::string>{"/dev/null", "/dev/null", "/dev/null"});
}

TEST_CASE("Runc: concurrent calls from several threads keep their outputs apart", "[unit]") {
  FakeRuntime fake("echo \"[$last]\"");
  Runc runc(fake.Config());
  constexpr int kThreads = 8, kCalls = 10;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const pid_t want = 1000 * (t + 1) + i;
        auto pids = runc.Ps(std::to_string(want));
        if (pids.ok() && *pids == std::vector<pid_t>{want}) ++good;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  CHECK(good == kThreads * kCalls);
  CHECK(fake.Calls().size() == kThreads * kCalls);
}

}  // namespace
