// containerd-shim-embed-v1 end to end: a container's stdio between the
// process and a foreground `ctr run` (containerd's fifos, opened by the shim
// and handed to the runtime), and CloseIO. See shim_e2e_test.cc.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "test/integration/shim_e2e_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace e2e;

// Where two strings first differ, for a readable failure on megabytes.
std::string Difference(std::string_view got, std::string_view want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (i == got.size() && i == want.size()) return "identical";
  auto around = [&](std::string_view s) {
    size_t from = i >= 20 ? i - 20 : 0;
    return fmt::format("{:?}", s.substr(from, 40));
  };
  return fmt::format("got {} bytes, want {}; first difference at byte {}: got {} want {}",
                     got.size(), want.size(), i, around(got), around(want));
}

// Writes all of `data` to a pipe with a deadline (the reader may be broken).
absl::Status WriteAll(int fd, std::string_view data, Deadline deadline) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return base::ErrnoStatus("fcntl");
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return base::ErrnoStatus("write");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return absl::DeadlineExceededError(fmt::format("{} bytes not taken", data.size()));
    pollfd p{fd, POLLOUT, 0};
    (void)poll(&p, 1, static_cast<int>(left.count()));
  }
  return absl::OkStatus();
}

std::string Seq(int from, int to) {
  std::string s;
  for (int i = from; i <= to; ++i) s += std::to_string(i) + "\n";
  return s;
}

}  // namespace

TEST_CASE("shim e2e io: stdout and stderr reach ctr run unchanged and apart",
          "[containerd][shim][e2e][io]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("io");
  const std::string rootfs = e->Rootfs();

  SECTION("distinct text on each stream") {
    const std::string out_text = "to stdout " + UniqueName("o") + "\nsecond line";
    const std::string err_text = "to stderr " + UniqueName("e");
    absl::StatusOr<Result> r = e->cd().Ctr(RunArgs(
        ns, {"--rm"}, rootfs, UniqueName("text"),
        {"sh", "-c", "printf '%s' \"$1\"; printf '%s' \"$2\" >&2", "sh", out_text, err_text}));
    REQUIRE_OK(r);
    INFO(*r << "\nshim log:\n" << e->ShimLog());
    CHECK(r->exit_code == 0);
    CHECK(r->out == out_text);
    CHECK(r->err == err_text);
  }

  SECTION("10 MiB on stdout and 1 MiB on stderr at once, no byte lost or moved") {
    // seq's output is known exactly, so order is checked as well as size.
    const std::string want_out = Seq(1, 1450000);
    REQUIRE(want_out.size() >= 10u * 1024 * 1024);
    const std::string want_err(1024 * 1024, 'e');
    auto start = Clock::now();
    absl::StatusOr<Result> r = e->cd().Ctr(
        RunArgs(ns, {"--rm"}, rootfs, UniqueName("bulk"),
                {"sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' e >&2 & seq 1 1450000; wait"}),
        120s);
    REQUIRE_OK(r);
    INFO("exit " << r->exit_code << " took "
                 << std::chrono::duration<double>(Clock::now() - start).count() << " s");
    CHECK(r->exit_code == 0);
    // (Difference, not ==: Catch would print megabytes.)
    CHECK(r->out.size() == want_out.size());
    CHECK(Difference(r->out, want_out) == "identical");
    CHECK(r->err.size() == want_err.size());
    CHECK(Difference(r->err, want_err) == "identical");
  }
}

TEST_CASE("shim e2e io: stdin piped into ctr run reaches the process",
          "[containerd][shim][e2e][io]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("stdin");
  const std::string rootfs = e->Rootfs();

  SECTION("head -n 2 gets both lines while stdin stays open") {
    SpawnOptions o;
    o.stdin_pipe = true;
    absl::StatusOr<Subprocess> run = e->cd().RunCtrAsync(
        RunArgs(ns, {"--rm"}, rootfs, UniqueName("head"), {"head", "-n", "2"}), std::move(o));
    REQUIRE_OK(run);
    const std::string lines = fmt::format("first {}\nsecond {}\n", UniqueName("a"), UniqueName("b"));
    REQUIRE_OK(WriteAll(run->stdin_pipe().get(), lines + "third line, not printed\n",
                        DeadlineIn(30s)));
    // stdin is NOT closed: head exits after two lines, and so does ctr.
    absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(60s));
    INFO("ctr out '" << run->out() << "' err '" << run->err() << "'\nshim log:\n" << e->ShimLog());
    REQUIRE_OK(st);
    CHECK(st->success());
    CHECK(run->out() == lines);
  }

  SECTION("1 MiB through cat and back, then EOF") {
    SpawnOptions o;
    o.stdin_pipe = true;
    absl::StatusOr<Subprocess> run = e->cd().RunCtrAsync(
        RunArgs(ns, {"--rm"}, rootfs, UniqueName("cat"), {"cat"}), std::move(o));
    REQUIRE_OK(run);
    std::string data;
    for (int i = 0; data.size() < 1024 * 1024; ++i) data += fmt::format("stdin line {}\n", i);
    REQUIRE_OK(WriteAll(run->stdin_pipe().get(), data, DeadlineIn(60s)));
    run->stdin_pipe().Reset();
    absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(60s));
    INFO("ctr err '" << run->err() << "'\nshim log:\n" << e->ShimLog());
    REQUIRE_OK(st);
    CHECK(st->success());
    CHECK(run->out().size() == data.size());
    CHECK(Difference(run->out(), data) == "identical");
  }
}

TEST_CASE("shim e2e io: closing ctr's stdin reaches the process as EOF (CloseIO)",
          "[containerd][shim][e2e][io]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("closeio");
  const std::string rootfs = e->Rootfs();
  const std::string id = UniqueName("cat");
  SpawnOptions o;
  o.stdin_pipe = true;
  // cat, then a word after EOF: proves cat ended by EOF and not by a signal.
  absl::StatusOr<Subprocess> run = e->cd().RunCtrAsync(
      RunArgs(ns, {"--rm"}, rootfs, id, {"sh", "-c", "cat; echo cat-saw-eof"}),
      std::move(o));
  REQUIRE_OK(run);
  const std::string line = "hello " + UniqueName("h") + "\n";
  REQUIRE_OK(WriteAll(run->stdin_pipe().get(), line, DeadlineIn(30s)));
  {
    absl::Status echoed = run->WaitForOutput(line, DeadlineIn(60s));
    INFO("ctr err '" << run->err() << "'\nshim log:\n" << e->ShimLog());
    REQUIRE_OK(echoed);
  }
  // The container is running and reading: now only containerd's CloseIO can
  // give it EOF, since the shim holds a writer of the fifo until then.
  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks));
  REQUIRE(tasks[id].status == "RUNNING");
  run->stdin_pipe().Reset();
  absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(30s));
  INFO("ctr out '" << run->out() << "' err '" << run->err() << "'\nshim log:\n" << e->ShimLog());
  REQUIRE_OK(st);
  CHECK(st->success());
  CHECK(run->out() == line + "cat-saw-eof\n");
}
