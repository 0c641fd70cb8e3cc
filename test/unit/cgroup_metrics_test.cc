// ReadCgroupMetrics on a made-up /proc and cgroupfs: the v1 hierarchies of a
// hybrid host and a pure unified (v2) host. The containerd e2e test covers
// the real thing on this machine's hierarchy.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "cgroups_v1.pb.h"
#include "cgroups_v2.pb.h"
#include "shim/task/cgroup_metrics.h"
#include "test/support/fs_util.h"

namespace {

using test_support::ScopedTempDir;

void Put(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  REQUIRE(test_support::WriteFile(path, text).ok());
}

}  // namespace

TEST_CASE("cgroup metrics: v1 hierarchies, as runc makes them on a hybrid host") {
  ScopedTempDir dir("cgroup-metrics-");
  REQUIRE(dir.ok());
  const std::string proc = dir.Sub("proc"), cg = dir.Sub("cgroup");
  Put(proc + "/42/cgroup",
      "5:memory:/ns/c\n4:cpu,cpuacct:/ns/c\n3:pids:/ns/c\n1:name=systemd:/x\n0::/\n");
  Put(cg + "/memory/ns/c/memory.usage_in_bytes", "4096000\n");
  Put(cg + "/memory/ns/c/memory.limit_in_bytes", "9223372036854771712\n");
  Put(cg + "/memory/ns/c/memory.stat", "cache 100\nrss 200\npgfault 7\ntotal_inactive_file 30\n");
  Put(cg + "/cpu,cpuacct/ns/c/cpuacct.usage", "123456789\n");
  Put(cg + "/cpu,cpuacct/ns/c/cpuacct.usage_percpu", "100000000 23456789 \n");
  Put(cg + "/cpu,cpuacct/ns/c/cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 99\n");
  Put(cg + "/pids/ns/c/pids.current", "3\n");
  Put(cg + "/pids/ns/c/pids.max", "max\n");
  Put(cg + "/unified/cgroup.procs", "");  // the hybrid host's empty unified tree

  auto m = shim::ReadCgroupMetrics(42, proc, cg);
  REQUIRE(m.ok());
  CHECK(m->type_url == "io.containerd.cgroups.v1.Metrics");
  io::containerd::cgroups::v1::Metrics metrics;
  REQUIRE(metrics.ParseFromString(m->value));
  CHECK(metrics.memory().usage().usage() == 4096000);
  CHECK(metrics.memory().usage().limit() == 9223372036854771712ull);
  CHECK(metrics.memory().cache() == 100);
  CHECK(metrics.memory().rss() == 200);
  CHECK(metrics.memory().pg_fault() == 7);
  CHECK(metrics.memory().total_inactive_file() == 30);
  CHECK(metrics.cpu().usage().total() == 123456789);
  REQUIRE(metrics.cpu().usage().per_cpu_size() == 2);
  CHECK(metrics.cpu().usage().per_cpu(1) == 23456789);
  CHECK(metrics.cpu().throttling().throttled_periods() == 2);
  CHECK(metrics.pids().current() == 3);
  CHECK(metrics.pids().limit() == 0);  // "max": no limit
}

TEST_CASE("cgroup metrics: the unified (v2) hierarchy") {
  ScopedTempDir dir("cgroup-metrics-");
  REQUIRE(dir.ok());
  const std::string proc = dir.Sub("proc"), cg = dir.Sub("cgroup");
  Put(proc + "/7/cgroup", "0::/ns/c\n");
  Put(cg + "/cgroup.controllers", "cpu memory pids\n");
  Put(cg + "/ns/c/pids.current", "1\n");
  Put(cg + "/ns/c/pids.max", "100\n");
  Put(cg + "/ns/c/cpu.stat", "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n");
  Put(cg + "/ns/c/memory.current", "819200\n");
  Put(cg + "/ns/c/memory.max", "max\n");
  Put(cg + "/ns/c/memory.stat", "anon 4096\nfile 8192\ninactive_file 1024\n");
  Put(cg + "/ns/c/memory.events", "oom 1\noom_kill 1\n");

  auto m = shim::ReadCgroupMetrics(7, proc, cg);
  REQUIRE(m.ok());
  CHECK(m->type_url == "io.containerd.cgroups.v2.Metrics");
  io::containerd::cgroups::v2::Metrics metrics;
  REQUIRE(metrics.ParseFromString(m->value));
  CHECK(metrics.pids().current() == 1);
  CHECK(metrics.pids().limit() == 100);
  CHECK(metrics.cpu().usage_usec() == 5000);
  CHECK(metrics.cpu().system_usec() == 2000);
  CHECK(metrics.memory().usage() == 819200);
  CHECK(metrics.memory().usage_limit() == 0);
  CHECK(metrics.memory().anon() == 4096);
  CHECK(metrics.memory().inactive_file() == 1024);
  CHECK(metrics.memory_events().oom_kill() == 1);
}

TEST_CASE("cgroup metrics: a process that is gone is a clear NotFound") {
  ScopedTempDir dir("cgroup-metrics-");
  REQUIRE(dir.ok());
  auto m = shim::ReadCgroupMetrics(99, dir.Sub("proc"), dir.Sub("cgroup"));
  REQUIRE_FALSE(m.ok());
  CHECK(absl::IsNotFound(m.status()));
  CHECK(std::string(m.status().message()).find("gone") != std::string::npos);
}
