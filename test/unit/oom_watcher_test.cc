// The OOM watcher without root: its parsers, and its cgroup v2 path (inotify
// on memory.events) on a made-up /proc and cgroupfs. The v1 path
// (cgroup.event_control) needs a real memory cgroup: update_oom_test.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "shim/oci/spec.h"
#include "shim/task/oom_watcher.h"
#include "test/support/fs_util.h"
#include "test/unit/ttrpc_test_util.h"

namespace {

using shim::ParseOomKills;

// memory.events of a v2 cgroup whose processes were OOM-killed twice.
constexpr char kV2Events[] =
    "low 0\nhigh 0\nmax 14\noom 3\noom_kill 2\noom_group_kill 0\n";
// memory.oom_control of a v1 cgroup, kernel >= 4.13.
constexpr char kV1OomControl[] = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";

std::string V2Events(uint64_t kills) {
  return fmt::format("low 0\nhigh 0\nmax 1\noom {}\noom_kill {}\noom_group_kill 0\n", kills,
                     kills);
}

// What the watcher reports, as the loop thread hands it over.
class Counts {
 public:
  void Add(const std::string& id, uint64_t n) {
    std::lock_guard lock(mu_);
    seen_.push_back(fmt::format("{} {}", id, n));
    cv_.notify_all();
  }
  // Waits (at most 10 s) until `entry` has been reported.
  bool WaitFor(const std::string& entry) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::find(seen_.begin(), seen_.end(), entry) != seen_.end();
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> seen_;
};

}  // namespace

TEST_CASE("oom watcher: the oom_kill count of memory.events and memory.oom_control",
          "[unit][oom]") {
  CHECK(ParseOomKills(kV2Events) == 2u);  // not oom (3) nor oom_group_kill
  CHECK(ParseOomKills(kV1OomControl) == 7u);  // not oom_kill_disable
  CHECK(ParseOomKills("oom_kill 18446744073709551615") == UINT64_MAX);  // no newline at the end
  // A v1 kernel before 4.13 counts nothing; a broken line is no count.
  CHECK(ParseOomKills("oom_kill_disable 0\nunder_oom 1\n") == std::nullopt);
  CHECK(ParseOomKills("oom_kill x\n") == std::nullopt);
  CHECK(ParseOomKills("oom_kill 3 4\n") == std::nullopt);
  CHECK(ParseOomKills("") == std::nullopt);
}

TEST_CASE("oom watcher: linux.cgroupsPath of a spec", "[unit][oom]") {
  using shim::oci::SpecCgroupsPath;
  CHECK(SpecCgroupsPath(R"({"ociVersion":"1.0.2","process":{"args":["sh"]},)"
                        R"("linux":{"resources":{"memory":{"limit":1}},"cgroupsPath":"/default/c1"}})") ==
        "/default/c1");
  CHECK(SpecCgroupsPath(R"({"linux":{"namespaces":[]}})") == std::nullopt);
  CHECK(SpecCgroupsPath(R"({"process":{}})") == std::nullopt);
  CHECK(SpecCgroupsPath("not json") == std::nullopt);
}

TEST_CASE("oom watcher: cgroup v2 memory.events, by the init's pid or the spec's path",
          "[unit][oom]") {
  test_support::ScopedTempDir tmp("oom-watcher-test-");
  const std::string proc = tmp.path() + "/proc", cgroup = tmp.path() + "/cgroup";
  // A unified host: cgroup.controllers at the root.
  REQUIRE(test_support::MakeDirs(cgroup + "/ns/c1").ok());
  REQUIRE(test_support::MakeDirs(cgroup + "/ns/c2").ok());
  REQUIRE(test_support::WriteFile(cgroup + "/cgroup.controllers", "memory pids\n").ok());
  REQUIRE(test_support::WriteFile(cgroup + "/ns/c1/memory.events", V2Events(0)).ok());
  REQUIRE(test_support::WriteFile(cgroup + "/ns/c2/memory.events", V2Events(4)).ok());
  // c1's init is this very process (a live pid with a start time), in /ns/c1.
  const pid_t self = getpid();
  REQUIRE(test_support::MakeDirs(fmt::format("{}/{}", proc, self)).ok());
  REQUIRE(test_support::WriteFile(fmt::format("{}/{}/cgroup", proc, self), "0::/ns/c1\n").ok());
  auto start = bpf::ReadStartBoottime(self);
  REQUIRE(start.ok());
  embedshim::ContainerRecord c1;
  c1.set_namespace_("ns");
  c1.set_id("c1");
  c1.set_pid(static_cast<uint32_t>(self));
  c1.set_start_boottime(*start);
  c1.set_bundle(tmp.path() + "/no-bundle");
  // c2's init is gone: its bundle's spec names the cgroup.
  REQUIRE(test_support::MakeDirs(tmp.path() + "/b2").ok());
  REQUIRE(test_support::WriteFile(tmp.path() + "/b2/config.json",
                                  R"({"linux":{"cgroupsPath":"/ns/c2"}})")
              .ok());
  embedshim::ContainerRecord c2;
  c2.set_namespace_("ns");
  c2.set_id("c2");
  c2.set_pid(0);
  c2.set_bundle(tmp.path() + "/b2");

  test::LoopThread thread;
  Counts counts;
  std::unique_ptr<shim::OomWatcher> watcher;
  thread.Sync([&] {
    watcher = std::make_unique<shim::OomWatcher>(thread.loop(), proc, cgroup);
    watcher->SetOnCount([&](const std::string&, const std::string& id, uint64_t n) {
      counts.Add(id, n);
    });
    REQUIRE(watcher->Watch(c1).ok());
    REQUIRE(watcher->Watch(c2).ok());
    REQUIRE(watcher->Watch(c2).ok());  // re-armed: still one watch
    CHECK(watcher->watched() == 2);
    CHECK(watcher->OomKills("ns", "c1") == 0u);
    CHECK(watcher->OomKills("ns", "c2") == 4u);
    CHECK(watcher->OomKills("ns", "c3") == std::nullopt);
  });

  // The kernel counts a kill, then changes the file.
  REQUIRE(test_support::WriteFile(cgroup + "/ns/c1/memory.events", V2Events(1)).ok());
  CHECK(counts.WaitFor("c1 1"));
  REQUIRE(test_support::WriteFile(cgroup + "/ns/c2/memory.events", V2Events(5)).ok());
  CHECK(counts.WaitFor("c2 5"));

  thread.Sync([&] {
    watcher->Unwatch("ns", "c1");
    CHECK(watcher->watched() == 1);
    CHECK(watcher->OomKills("ns", "c1") == std::nullopt);
    // No cgroup to be found: a clear error, nothing watched.
    embedshim::ContainerRecord c3 = c2;
    c3.set_id("c3");
    c3.set_bundle(tmp.path() + "/nowhere");
    auto st = watcher->Watch(c3);
    CHECK(absl::IsNotFound(st));
    CHECK(watcher->watched() == 1);
    watcher.reset();  // closes its fds on the loop thread
  });
}
