// OpenStdio with real fifos, files and binary:// loggers: the behaviour the
// container, containerd and the logger see.
#include "shim/oci/stdio.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fmt/format.h"
#include "shim/oci/logger.h"
#include "shim/oci/stdio_uri.h"
#include "test/oci/oci_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/test_logger.h"

namespace {

using oci_test::Clock;
using oci_test::kDeadline;
using shim::oci::OpenStdio;
using shim::oci::ParseStdioUri;
using shim::oci::StdioPaths;
using test_support::ScopedTempDir;

std::string MakeFifo(const ScopedTempDir& dir, const char* name) {
  std::string path = dir.Sub(name);
  REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  return path;
}

bool SharesDescription(int a, int b) {
  // File status flags live in the open file description: a change through
  // one fd shows through the other only if they share it.
  int flags = fcntl(a, F_GETFL);
  REQUIRE(fcntl(a, F_SETFL, flags | O_NONBLOCK) == 0);
  bool shared = (fcntl(b, F_GETFL) & O_NONBLOCK) != 0;
  REQUIRE(fcntl(a, F_SETFL, flags) == 0);
  return shared;
}

TEST_CASE("stdout fifo: the container writes with no reader, no SIGPIPE; output waits", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string fifo = MakeFifo(dir, "stdout");
  auto opened = OpenStdio({.in = "", .out = fifo, .err = ""});  // must not block: no reader
  REQUIRE_OK(opened);
  REQUIRE(opened->child.out.valid());
  CHECK_FALSE(opened->child.in.valid());
  CHECK_FALSE(opened->child.err.valid());
  CHECK_FALSE(opened->stdin_keepalive.valid());
  CHECK((fcntl(opened->child.out.get(), F_GETFD) & FD_CLOEXEC) != 0);

  // The container: default SIGPIPE, writes while containerd's reader is away.
  const int out_fd = opened->child.out.get();
  pid_t writer = oci_test::ForkChild([out_fd] {
    signal(SIGPIPE, SIG_DFL);
    const char msg[] = "hello from the container\n";
    return write(out_fd, msg, sizeof msg - 1) == sizeof msg - 1 ? 0 : 1;
  });
  int status = oci_test::WaitChild(writer, Clock::now() + kDeadline);
  REQUIRE(status != -1);
  INFO("wait status " << status);
  REQUIRE(WIFEXITED(status));  // not killed by SIGPIPE
  CHECK(WEXITSTATUS(status) == 0);

  // containerd's reader comes (back) later and gets what was written.
  base::UniqueFd reader(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  REQUIRE(reader.valid());
  std::string got;
  CHECK(oci_test::ReadUntil(reader.get(), "hello from the container\n", &got,
                            Clock::now() + kDeadline));
  // No EOF while the shim's (test's) copy is open...
  CHECK((oci_test::PollNow(reader.get(), POLLIN) & POLLHUP) == 0);
  // ...and EOF once the container and every holder of the fd are gone.
  opened->child.out.Reset();
  std::string rest;
  CHECK(oci_test::ReadToEof(reader.get(), &rest, Clock::now() + kDeadline));
  CHECK(rest.empty());
}

TEST_CASE("stdin fifo: data flows; EOF only after the writer and the keepalive close", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string fifo = MakeFifo(dir, "stdin");
  auto opened = OpenStdio({.in = fifo, .out = "", .err = ""});  // no writer yet: must not block
  REQUIRE_OK(opened);
  REQUIRE(opened->child.in.valid());
  REQUIRE(opened->stdin_keepalive.valid());
  // The container reads blocking, like from any stdin.
  CHECK((fcntl(opened->child.in.get(), F_GETFL) & O_NONBLOCK) == 0);
  CHECK((fcntl(opened->child.in.get(), F_GETFL) & O_ACCMODE) == O_RDONLY);
  CHECK((fcntl(opened->stdin_keepalive.get(), F_GETFL) & O_ACCMODE) == O_WRONLY);

  // The container: copies its stdin to a report pipe, then "<EOF>" at EOF.
  int report[2];
  REQUIRE(pipe2(report, O_CLOEXEC) == 0);
  base::UniqueFd report_r(report[0]), report_w(report[1]);
  const int in_fd = opened->child.in.get();
  const int keepalive_fd = opened->stdin_keepalive.get();
  const int report_fd = report_w.get();
  pid_t reader = oci_test::ForkChild([in_fd, keepalive_fd, report_fd] {
    close(keepalive_fd);  // the container does not hold the shim's writer
    char buf[256];
    ssize_t n;
    while ((n = read(in_fd, buf, sizeof buf)) > 0) {
      if (write(report_fd, buf, static_cast<size_t>(n)) != n) return 1;
    }
    return write(report_fd, "<EOF>", 5) == 5 ? 0 : 1;
  });
  report_w.Reset();

  // containerd's writer.
  base::UniqueFd writer(open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
  REQUIRE(writer.valid());
  REQUIRE(write(writer.get(), "typed\n", 6) == 6);
  std::string got;
  REQUIRE(oci_test::ReadUntil(report_r.get(), "typed\n", &got, Clock::now() + kDeadline));

  // containerd's writer goes away (e.g. a client detaches): the keepalive
  // still counts as a writer, so the fifo shows no hangup and the reader no EOF.
  writer.Reset();
  CHECK((oci_test::PollNow(opened->child.in.get(), POLLIN) & (POLLHUP | POLLIN)) == 0);
  CHECK(oci_test::PollNow(report_r.get(), POLLIN) == 0);

  // CloseIO: now the container sees EOF.
  opened->stdin_keepalive.Reset();
  std::string rest;
  CHECK(oci_test::ReadToEof(report_r.get(), &rest, Clock::now() + kDeadline));
  CHECK(rest == "<EOF>");
  int status = oci_test::WaitChild(reader, Clock::now() + kDeadline);
  CHECK((status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

TEST_CASE("stdout and stderr on the same path are opened once", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string fifo = MakeFifo(dir, "both");
  auto opened = OpenStdio({.in = "", .out = fifo, .err = fifo});
  REQUIRE_OK(opened);
  REQUIRE(opened->child.out.valid());
  REQUIRE(opened->child.err.valid());
  CHECK(opened->child.out.get() != opened->child.err.get());
  CHECK(SharesDescription(opened->child.out.get(), opened->child.err.get()));
  CHECK((fcntl(opened->child.err.get(), F_GETFD) & FD_CLOEXEC) != 0);

  // The same file named two ways (file:// and a plain path) too.
  const std::string log = dir.Sub("log");
  auto file = OpenStdio({.in = "", .out = "file://" + log, .err = log});
  REQUIRE_OK(file);
  CHECK(SharesDescription(file->child.out.get(), file->child.err.get()));

  // Different fifos stay different.
  const std::string other = MakeFifo(dir, "other");
  auto separate = OpenStdio({.in = "", .out = fifo, .err = other});
  REQUIRE_OK(separate);
  CHECK_FALSE(SharesDescription(separate->child.out.get(), separate->child.err.get()));
}

TEST_CASE("file:// creates parent dirs and appends; a plain file path appends", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string log = dir.Sub("logs/deep/container.log");
  auto opened = OpenStdio({.in = "", .out = "file://" + log, .err = ""});
  REQUIRE_OK(opened);
  REQUIRE(write(opened->child.out.get(), "one\n", 4) == 4);
  opened = OpenStdio({.in = "", .out = "", .err = "file://" + log});
  REQUIRE_OK(opened);
  REQUIRE(write(opened->child.err.get(), "two\n", 4) == 4);
  struct stat st;
  REQUIRE(stat(log.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);  // as runc-v2 creates it

  opened = OpenStdio({.in = "", .out = log, .err = ""});
  REQUIRE_OK(opened);
  CHECK((fcntl(opened->child.out.get(), F_GETFL) & O_APPEND) != 0);
  REQUIRE(write(opened->child.out.get(), "three\n", 6) == 6);
  auto text = test_support::ReadFile(log);
  REQUIRE_OK(text);
  CHECK(*text == "one\ntwo\nthree\n");
}

TEST_CASE("OpenStdio errors name the stream and the path", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());

  auto relative_logger = OpenStdio({.in = "", .out = "binary://logger", .err = ""});
  CHECK(relative_logger.status().code() == absl::StatusCode::kInvalidArgument);
  auto missing_logger = OpenStdio({.in = "", .out = "binary:///no/such/logger", .err = ""});
  CHECK(missing_logger.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(missing_logger.status().message()),
             Catch::Contains("logger /no/such/logger: cannot execute"));
  auto stderr_logger = OpenStdio({.in = "", .out = "", .err = "binary:///bin/true"});
  CHECK(stderr_logger.status().code() == absl::StatusCode::kInvalidArgument);
  auto fifo_uri = OpenStdio({.in = "", .out = "fifo://" + dir.Sub("x"), .err = ""});
  CHECK(fifo_uri.status().code() == absl::StatusCode::kInvalidArgument);

  const std::string missing = dir.Sub("missing-fifo");
  auto gone = OpenStdio({.in = "", .out = "", .err = missing});
  CHECK(gone.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(gone.status().message()), Catch::Contains("stderr " + missing));

  gone = OpenStdio({.in = missing, .out = "", .err = ""});
  CHECK(gone.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(gone.status().message()), Catch::Contains("stdin " + missing));

  auto relative = OpenStdio({.in = "", .out = "relative/fifo", .err = ""});
  CHECK(relative.status().code() == absl::StatusCode::kInvalidArgument);
  auto scheme = OpenStdio({.in = "", .out = "tcp://1.2.3.4:5", .err = ""});
  CHECK(scheme.status().code() == absl::StatusCode::kInvalidArgument);
  auto stdin_uri = OpenStdio({.in = "file://" + dir.Sub("x"), .out = "", .err = ""});
  CHECK(stdin_uri.status().code() == absl::StatusCode::kInvalidArgument);
  auto directory = OpenStdio({.in = "", .out = dir.path(), .err = ""});
  CHECK(directory.status().code() == absl::StatusCode::kInvalidArgument);

  auto none = OpenStdio({});
  REQUIRE_OK(none);
  CHECK_FALSE(none->child.in.valid());
  CHECK_FALSE(none->child.out.valid());
  CHECK_FALSE(none->child.err.valid());
}

TEST_CASE("stdio URIs read as Go's net/url reads them", "[unit]") {
  auto plain = ParseStdioUri("/run/fifo?not=a query");
  REQUIRE_OK(plain);
  CHECK(plain->scheme.empty());
  CHECK(plain->path == "/run/fifo?not=a query");

  auto binary = ParseStdioUri("BINARY://host/usr/bin/my%20logger?b=2&a=x+y%2Fz&flag&b=3#frag");
  REQUIRE_OK(binary);
  CHECK(binary->scheme == "binary");
  CHECK(binary->path == "/usr/bin/my logger");  // the host is ignored, as u.Path
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  CHECK(binary->query == Pairs{{"b", "2"}, {"a", "x y/z"}, {"flag", ""}, {"b", "3"}});
  auto command = shim::oci::LoggerCommandOf(*binary);
  REQUIRE_OK(command);
  CHECK(command->args == std::vector<std::string>{"b", "2", "a", "x y/z", "flag", ""});

  auto file = ParseStdioUri("file:///var/log/a%2Cb.log");
  REQUIRE_OK(file);
  CHECK(file->path == "/var/log/a,b.log");

  CHECK(ParseStdioUri("relative").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseStdioUri("file:///bad%zz").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseStdioUri("binary:///x?a=%4").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("file:// on stdout decides stderr too, as runc-v2; stderr \"\" stays none", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string log = dir.Sub("c.log");
  const std::string other = MakeFifo(dir, "other");
  auto both = OpenStdio({.in = "", .out = "file://" + log, .err = other});
  REQUIRE_OK(both);
  REQUIRE(both->child.err.valid());
  CHECK(SharesDescription(both->child.out.get(), both->child.err.get()));
  REQUIRE(write(both->child.out.get(), "out\n", 4) == 4);
  REQUIRE(write(both->child.err.get(), "err\n", 4) == 4);
  auto text = test_support::ReadFile(log);
  REQUIRE_OK(text);
  CHECK(*text == "out\nerr\n");

  auto no_err = OpenStdio({.in = "", .out = "file://" + log, .err = ""});
  REQUIRE_OK(no_err);
  CHECK_FALSE(no_err->child.err.valid());
}

// Waits until `path` exists and holds `text` (the logger writes its files
// itself); inotify, with a deadline.
bool WaitForFile(const std::string& path, const std::string& text) {
  const Clock::time_point deadline = Clock::now() + kDeadline;
  base::UniqueFd in(inotify_init1(IN_CLOEXEC));
  REQUIRE(in.valid());
  const std::string parent = path.substr(0, path.rfind('/'));
  REQUIRE(inotify_add_watch(in.get(), parent.c_str(), IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE) >= 0);
  for (;;) {
    auto got = test_support::ReadFile(path);
    if (got.ok() && got->find(text) != std::string::npos) return true;
    if (oci_test::PollFd(in.get(), POLLIN, deadline) == 0) return false;
    char buf[4096];
    (void)!read(in.get(), buf, sizeof buf);
  }
}

TEST_CASE("binary://: the logger gets fds 3/4/5, the env and the query as arguments; "
          "it sees every byte and EOF, and is not our child",
          "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string logger = dir.Sub("logger.sh");
  REQUIRE_OK(test_support::InstallTestLogger(logger));
  const std::string uri = fmt::format("binary://{}?dir={}&extra=a+b", logger, dir.path());
  shim::oci::StdioOptions options;
  options.ns = "ns1";
  options.id = "ctr1";
  auto opened = OpenStdio({.in = "", .out = uri, .err = ""}, options);
  REQUIRE_OK(opened);
  REQUIRE(opened->child.out.valid());
  REQUIRE(opened->child.err.valid());  // stderr goes to the logger even when ""
  REQUIRE(opened->logger_pid > 0);
  REQUIRE(opened->logger_pidfd.valid());
  CHECK((fcntl(opened->child.out.get(), F_GETFD) & FD_CLOEXEC) != 0);
  // Ready means it wrote its pid file first.
  auto pid_text = test_support::ReadFile(dir.Sub("pid"));
  REQUIRE_OK(pid_text);
  CHECK(std::stoi(*pid_text) == opened->logger_pid);
  int status;
  CHECK(waitpid(opened->logger_pid, &status, WNOHANG) == -1);  // reaped by others
  CHECK(errno == ECHILD);

  auto args = test_support::ReadFile(dir.Sub("args"));
  REQUIRE_OK(args);
  CHECK(*args == fmt::format("{}\ndir\n{}\nextra\na b\n", logger, dir.path()));
  auto env = test_support::ReadFile(dir.Sub("env"));
  REQUIRE_OK(env);
  CHECK_THAT(*env, Catch::Contains("CONTAINER_ID=ctr1\n"));
  CHECK_THAT(*env, Catch::Contains("CONTAINER_NAMESPACE=ns1\n"));

  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); i += 100) big[i] = '\n';
  const int out_fd = opened->child.out.get();
  pid_t writer = oci_test::ForkChild([out_fd, &big] {
    size_t done = 0;
    while (done < big.size()) {
      ssize_t n = write(out_fd, big.data() + done, big.size() - done);
      if (n <= 0) return 1;
      done += static_cast<size_t>(n);
    }
    return 0;
  });
  CHECK(oci_test::WaitChild(writer, Clock::now() + kDeadline) == 0);
  REQUIRE(write(opened->child.err.get(), "to stderr\n", 10) == 10);
  // The container's ends close: the logger sees EOF and leaves by itself.
  opened->child.out.Reset();
  opened->child.err.Reset();
  CHECK(oci_test::PollFd(opened->logger_pidfd.get(), POLLIN, Clock::now() + kDeadline) != 0);
  CHECK(WaitForFile(dir.Sub("events"), "eof\n"));
  auto out = test_support::ReadFile(dir.Sub("stdout"));
  REQUIRE_OK(out);
  CHECK(out->size() == big.size());
  CHECK(*out == big);
  auto err = test_support::ReadFile(dir.Sub("stderr"));
  REQUIRE_OK(err);
  CHECK(*err == "to stderr\n");
}

TEST_CASE("binary://: a logger that never gets ready fails the open in time and is killed",
          "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string logger = dir.Sub("logger.sh");
  REQUIRE_OK(test_support::InstallTestLogger(logger));
  shim::oci::StdioOptions options;
  options.logger_ready_timeout = std::chrono::milliseconds(300);
  const auto start = Clock::now();
  auto opened = OpenStdio(
      {.in = "", .out = fmt::format("binary://{}?dir={}&noready=1", logger, dir.path()), .err = ""},
      options);
  CHECK(opened.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(opened.status().message()),
             Catch::Contains("not ready after 300 ms (it must write to or close fd 5); killed"));
  CHECK(Clock::now() - start < std::chrono::seconds(10));
  auto pid_text = test_support::ReadFile(dir.Sub("pid"));
  REQUIRE_OK(pid_text);
  base::UniqueFd pidfd = oci_test::PidfdOpen(std::stoi(*pid_text));
  if (pidfd.valid()) CHECK(oci_test::PollFd(pidfd.get(), POLLIN, Clock::now() + kDeadline) != 0);
}

TEST_CASE("StopLogger: EOF first, then SIGTERM after the grace time", "[unit]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string logger = dir.Sub("logger.sh");
  REQUIRE_OK(test_support::InstallTestLogger(logger));
  auto opened =
      OpenStdio({.in = "", .out = fmt::format("binary://{}?dir={}&linger=1", logger, dir.path()),
                 .err = ""});
  REQUIRE_OK(opened);
  REQUIRE(write(opened->child.out.get(), "bye\n", 4) == 4);
  opened->child.out.Reset();
  opened->child.err.Reset();
  REQUIRE(WaitForFile(dir.Sub("events"), "eof\n"));
  auto end = shim::oci::StopLogger(opened->logger_pidfd, {.grace = std::chrono::milliseconds(100),
                                                          .term = std::chrono::seconds(10)});
  REQUIRE_OK(end);
  CHECK(*end == shim::oci::LoggerEnd::kTerminated);
  CHECK(WaitForFile(dir.Sub("events"), "eof\nterm\n"));
  auto out = test_support::ReadFile(dir.Sub("stdout"));
  REQUIRE_OK(out);
  CHECK(*out == "bye\n");
}

}  // namespace
