// `containerd-shim-embed-v1 ps` against a real containerd: what it lists
// must agree with `ctr task ls`, and it must say clearly when no shim runs.
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "google/protobuf/util/json_util.h"
#include "shim/task/admin.pb.h"
#include "test/integration/shim_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace std::chrono_literals;
using test_support::PrivateContainerd;
using test_support::Result;

std::string ShimBinary() { return test_support::DefaultShimDir() + "/containerd-shim-embed-v1"; }

Result RunOk(PrivateContainerd& cd, std::vector<std::string> args) {
  auto r = cd.Ctr(std::move(args));
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  return *r;
}

// `ctr task ls` as id -> (pid, STATUS).
std::map<std::string, std::pair<std::string, std::string>> CtrTasks(PrivateContainerd& cd,
                                                                     const std::string& ns) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  auto lines = test_support::SplitLines(RunOk(cd, {"-n", ns, "task", "ls"}).out);
  for (size_t i = 1; i < lines.size(); ++i) {
    auto f = test_support::Split(lines[i], ' ');
    if (f.size() >= 3) out[f[0]] = {f[1], f[2]};
  }
  return out;
}

// Removes what the fixture's teardown may leave of our shim when it has to
// kill it (the instance directory and the pins). Declared before the
// fixture, so it runs after the fixture's teardown, even when a test fails.
struct ShimLeftovers {
  std::string dir, pins;
  ~ShimLeftovers() {
    if (!dir.empty()) (void)test_support::RemoveTree(dir);
    if (!pins.empty()) (void)test_support::RemoveTree(pins);
  }
};

}  // namespace

TEST_CASE("ps lists what ctr task ls shows, with exit statuses and the shim's own state") {
  ShimLeftovers leftovers;
  auto cd = PrivateContainerd::Start();
  REQUIRE_OK(cd);
  shim_test::Instance instance = shim_test::InstanceFor((*cd)->address());
  leftovers.dir = instance.dir;
  leftovers.pins = instance.pins;
  auto rootfs = (*cd)->MakeBusyboxRootfs();
  REQUIRE_OK(rootfs);
  const std::string ns = test_support::UniqueName("ps");
  auto run = [&](const std::string& id, std::vector<std::string> cmd) {
    std::vector<std::string> args = {"-n", ns, "run", "-d", "--runtime", "io.containerd.embed.v1",
                                     "--env", "PATH=/bin", "--rootfs", *rootfs, id};
    args.insert(args.end(), cmd.begin(), cmd.end());
    RunOk(**cd, args);
  };
  run("sleeper-a", {"sleep", "100000"});
  run("sleeper-b", {"sleep", "100000"});
  run("exits-5", {"sh", "-c", "exit 5"});
  // ctr 1.6 has no `task wait`: wait for containerd to see the exit.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (CtrTasks(**cd, ns)["exits-5"].second != "STOPPED") {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
  }

  auto ps = test_support::Run({ShimBinary(), "-address", (*cd)->address(), "ps", "-json"}, 30s);
  REQUIRE_OK(ps);
  INFO(ps->out << ps->err);
  REQUIRE(ps->exit_code == 0);
  embedshim::ShimStatus status;
  REQUIRE(google::protobuf::util::JsonStringToMessage(ps->out, &status).ok());

  auto tasks = CtrTasks(**cd, ns);
  REQUIRE(tasks.size() == 3);
  REQUIRE(status.containers_size() == 3);
  for (const auto& c : status.containers()) {
    INFO(c.id());
    CHECK(c.namespace_() == ns);
    REQUIRE(tasks.contains(c.id()));
    CHECK(std::to_string(c.pid()) == tasks[c.id()].first);
    std::string upper = c.status();
    for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
    CHECK(upper == tasks[c.id()].second);
    if (c.id() == "exits-5") {
      CHECK(c.exit_status() == 5);
      CHECK(c.pid_check() == "exited");
    } else {
      CHECK(c.pid_check() == "same");
    }
  }
  CHECK(status.server_pid() > 0);
  CHECK(status.keeper_pid() > 0);
  CHECK(status.server_pid() != status.keeper_pid());
  CHECK(status.exit_monitor_pinned());
  CHECK(status.tracked_pids() >= 2);  // the two sleepers
  CHECK_FALSE(status.exit_monitor_version().empty());
  CHECK(status.connections() >= 1);

  // The table for people says the same.
  auto table = test_support::Run({ShimBinary(), "-address", (*cd)->address(), "ps"}, 30s);
  REQUIRE_OK(table);
  INFO(table->out);
  CHECK(table->exit_code == 0);
  CHECK_THAT(table->out, Catch::Contains("sleeper-a") && Catch::Contains("exits-5") &&
                             Catch::Contains("pinned") &&
                             Catch::Contains(std::to_string(status.keeper_pid())));
}

TEST_CASE("ps says clearly that no shim runs for a containerd without one") {
  auto r = test_support::Run(
      {ShimBinary(), "-address", "/tmp/" + test_support::UniqueName("nothing") + ".sock", "ps"},
      30s);
  REQUIRE_OK(r);
  CHECK(r->exit_code == 1);
  CHECK_THAT(r->err, Catch::Contains("no shim runs for containerd"));
}
