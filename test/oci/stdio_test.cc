// OpenStdio with real fifos: the behaviour the container and containerd see.
#include "shim/oci/stdio.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <catch2/catch.hpp>

#include "test/oci/oci_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using oci_test::Clock;
using oci_test::kDeadline;
using shim::oci::OpenStdio;
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
  CHECK((st.st_mode & 0777) == 0640);

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

  auto binary = OpenStdio({.in = "", .out = "binary:///usr/bin/logger?x=1", .err = ""});
  CHECK(binary.status().code() == absl::StatusCode::kUnimplemented);
  CHECK(std::string(binary.status().message()) ==
        "binary:// logging is not supported by this shim");

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

}  // namespace
