#include "shim/task/cgroup_metrics.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "base/read_file.h"
#include "cgroups_v1.pb.h"
#include "cgroups_v2.pb.h"
#include "fmt/format.h"

namespace shim {
namespace {

namespace v1 = io::containerd::cgroups::v1;
namespace v2 = io::containerd::cgroups::v2;

// A number file ("123\n"); "max" (no limit) and anything missing read as 0,
// as containerd's own readers do.
uint64_t ReadNumber(const std::string& path) {
  auto text = base::ReadFile(path);
  if (!text.ok()) return 0;
  char* end = nullptr;
  uint64_t n = std::strtoull(text->c_str(), &end, 10);
  return end != text->c_str() ? n : 0;
}

// "key value" lines (memory.stat, cpu.stat).
std::map<std::string, uint64_t> ReadKeyValues(const std::string& path) {
  std::map<std::string, uint64_t> out;
  auto text = base::ReadFile(path);
  if (!text.ok()) return out;
  std::istringstream in(*text);
  std::string key;
  uint64_t value;
  while (in >> key >> value) out[key] = value;
  return out;
}

// Sets each field of `msg` named in `table` from a "key value" file.
template <typename Msg, size_t N>
void SetFromKeyValues(Msg* msg, const std::pair<const char*, void (Msg::*)(uint64_t)> (&table)[N],
                      const std::string& path) {
  auto values = ReadKeyValues(path);
  for (const auto& [key, set] : table)
    if (auto it = values.find(key); it != values.end()) (msg->*set)(it->second);
}

// /proc/<pid>/cgroup: "0::/path" (unified) and "N:ctrl,ctrl:/path" (v1).
struct Membership {
  std::map<std::string, std::string> v1;  // "cpu,cpuacct" -> path
  std::optional<std::string> unified;
};

absl::StatusOr<Membership> ReadMembership(const std::string& proc_root, pid_t pid) {
  const std::string path = fmt::format("{}/{}/cgroup", proc_root, pid);
  auto text = base::ReadFile(path);
  if (!text.ok())
    return absl::NotFoundError(fmt::format("cannot read {}: the process is gone", path));
  Membership m;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), cgroup = line.substr(b + 1);
    if (controllers.empty()) m.unified = cgroup;
    else if (controllers.rfind("name=", 0) != 0) m.v1[controllers] = cgroup;
  }
  return m;
}

// The v1 directory of the hierarchy that has `controller`, or "".
std::string V1Dir(const Membership& m, const std::string& root, const std::string& controller) {
  for (const auto& [controllers, cgroup] : m.v1) {
    std::istringstream names(controllers);
    std::string name;
    while (std::getline(names, name, ','))
      if (name == controller) return root + "/" + controllers + cgroup;
  }
  return "";
}

CgroupMetrics V1Metrics(const Membership& m, const std::string& root) {
  v1::Metrics metrics;
  if (std::string dir = V1Dir(m, root, "memory"); !dir.empty()) {
    v1::MemoryStat* mem = metrics.mutable_memory();
    auto entry = [&](v1::MemoryEntry* e, const std::string& prefix) {
      e->set_usage(ReadNumber(dir + "/" + prefix + "usage_in_bytes"));
      e->set_limit(ReadNumber(dir + "/" + prefix + "limit_in_bytes"));
      e->set_max(ReadNumber(dir + "/" + prefix + "max_usage_in_bytes"));
      e->set_failcnt(ReadNumber(dir + "/" + prefix + "failcnt"));
    };
    entry(mem->mutable_usage(), "memory.");
    entry(mem->mutable_swap(), "memory.memsw.");
    entry(mem->mutable_kernel(), "memory.kmem.");
    entry(mem->mutable_kernel_tcp(), "memory.kmem.tcp.");
    // memory.stat's names are the message's, but for the pg* counters.
    using Setter = void (v1::MemoryStat::*)(uint64_t);
    static const std::pair<const char*, Setter> kStat[] = {
        {"cache", &v1::MemoryStat::set_cache},
        {"rss", &v1::MemoryStat::set_rss},
        {"rss_huge", &v1::MemoryStat::set_rss_huge},
        {"mapped_file", &v1::MemoryStat::set_mapped_file},
        {"dirty", &v1::MemoryStat::set_dirty},
        {"writeback", &v1::MemoryStat::set_writeback},
        {"pgpgin", &v1::MemoryStat::set_pg_pg_in},
        {"pgpgout", &v1::MemoryStat::set_pg_pg_out},
        {"pgfault", &v1::MemoryStat::set_pg_fault},
        {"pgmajfault", &v1::MemoryStat::set_pg_maj_fault},
        {"inactive_anon", &v1::MemoryStat::set_inactive_anon},
        {"active_anon", &v1::MemoryStat::set_active_anon},
        {"inactive_file", &v1::MemoryStat::set_inactive_file},
        {"active_file", &v1::MemoryStat::set_active_file},
        {"unevictable", &v1::MemoryStat::set_unevictable},
        {"hierarchical_memory_limit", &v1::MemoryStat::set_hierarchical_memory_limit},
        {"hierarchical_memsw_limit", &v1::MemoryStat::set_hierarchical_swap_limit},
        {"total_cache", &v1::MemoryStat::set_total_cache},
        {"total_rss", &v1::MemoryStat::set_total_rss},
        {"total_rss_huge", &v1::MemoryStat::set_total_rss_huge},
        {"total_mapped_file", &v1::MemoryStat::set_total_mapped_file},
        {"total_dirty", &v1::MemoryStat::set_total_dirty},
        {"total_writeback", &v1::MemoryStat::set_total_writeback},
        {"total_pgpgin", &v1::MemoryStat::set_total_pg_pg_in},
        {"total_pgpgout", &v1::MemoryStat::set_total_pg_pg_out},
        {"total_pgfault", &v1::MemoryStat::set_total_pg_fault},
        {"total_pgmajfault", &v1::MemoryStat::set_total_pg_maj_fault},
        {"total_inactive_anon", &v1::MemoryStat::set_total_inactive_anon},
        {"total_active_anon", &v1::MemoryStat::set_total_active_anon},
        {"total_inactive_file", &v1::MemoryStat::set_total_inactive_file},
        {"total_active_file", &v1::MemoryStat::set_total_active_file},
        {"total_unevictable", &v1::MemoryStat::set_total_unevictable},
    };
    SetFromKeyValues(mem, kStat, dir + "/memory.stat");
  }
  if (std::string dir = V1Dir(m, root, "cpuacct"); !dir.empty()) {
    v1::CPUUsage* usage = metrics.mutable_cpu()->mutable_usage();
    usage->set_total(ReadNumber(dir + "/cpuacct.usage"));
    usage->set_user(ReadNumber(dir + "/cpuacct.usage_user"));
    usage->set_kernel(ReadNumber(dir + "/cpuacct.usage_sys"));
    if (auto per_cpu = base::ReadFile(dir + "/cpuacct.usage_percpu"); per_cpu.ok()) {
      std::istringstream in(*per_cpu);
      uint64_t ns;
      while (in >> ns) usage->add_per_cpu(ns);
    }
  }
  if (std::string dir = V1Dir(m, root, "cpu"); !dir.empty()) {
    auto stat = ReadKeyValues(dir + "/cpu.stat");
    v1::Throttle* t = metrics.mutable_cpu()->mutable_throttling();
    t->set_periods(stat["nr_periods"]);
    t->set_throttled_periods(stat["nr_throttled"]);
    t->set_throttled_time(stat["throttled_time"]);
  }
  if (std::string dir = V1Dir(m, root, "pids"); !dir.empty()) {
    metrics.mutable_pids()->set_current(ReadNumber(dir + "/pids.current"));
    metrics.mutable_pids()->set_limit(ReadNumber(dir + "/pids.max"));
  }
  return {"io.containerd.cgroups.v1.Metrics", metrics.SerializeAsString()};
}

CgroupMetrics V2Metrics(const std::string& dir) {
  v2::Metrics metrics;
  metrics.mutable_pids()->set_current(ReadNumber(dir + "/pids.current"));
  metrics.mutable_pids()->set_limit(ReadNumber(dir + "/pids.max"));
  auto cpu = ReadKeyValues(dir + "/cpu.stat");
  v2::CPUStat* c = metrics.mutable_cpu();
  c->set_usage_usec(cpu["usage_usec"]);
  c->set_user_usec(cpu["user_usec"]);
  c->set_system_usec(cpu["system_usec"]);
  c->set_nr_periods(cpu["nr_periods"]);
  c->set_nr_throttled(cpu["nr_throttled"]);
  c->set_throttled_usec(cpu["throttled_usec"]);
  v2::MemoryStat* mem = metrics.mutable_memory();
  using Setter = void (v2::MemoryStat::*)(uint64_t);
  static const std::pair<const char*, Setter> kStat[] = {
      {"anon", &v2::MemoryStat::set_anon},
      {"file", &v2::MemoryStat::set_file},
      {"kernel_stack", &v2::MemoryStat::set_kernel_stack},
      {"slab", &v2::MemoryStat::set_slab},
      {"sock", &v2::MemoryStat::set_sock},
      {"shmem", &v2::MemoryStat::set_shmem},
      {"file_mapped", &v2::MemoryStat::set_file_mapped},
      {"file_dirty", &v2::MemoryStat::set_file_dirty},
      {"file_writeback", &v2::MemoryStat::set_file_writeback},
      {"anon_thp", &v2::MemoryStat::set_anon_thp},
      {"inactive_anon", &v2::MemoryStat::set_inactive_anon},
      {"active_anon", &v2::MemoryStat::set_active_anon},
      {"inactive_file", &v2::MemoryStat::set_inactive_file},
      {"active_file", &v2::MemoryStat::set_active_file},
      {"unevictable", &v2::MemoryStat::set_unevictable},
      {"slab_reclaimable", &v2::MemoryStat::set_slab_reclaimable},
      {"slab_unreclaimable", &v2::MemoryStat::set_slab_unreclaimable},
      {"pgfault", &v2::MemoryStat::set_pgfault},
      {"pgmajfault", &v2::MemoryStat::set_pgmajfault},
  };
  SetFromKeyValues(mem, kStat, dir + "/memory.stat");
  mem->set_usage(ReadNumber(dir + "/memory.current"));
  mem->set_usage_limit(ReadNumber(dir + "/memory.max"));
  mem->set_swap_usage(ReadNumber(dir + "/memory.swap.current"));
  mem->set_swap_limit(ReadNumber(dir + "/memory.swap.max"));
  auto events = ReadKeyValues(dir + "/memory.events");
  v2::MemoryEvents* e = metrics.mutable_memory_events();
  e->set_low(events["low"]);
  e->set_high(events["high"]);
  e->set_max(events["max"]);
  e->set_oom(events["oom"]);
  e->set_oom_kill(events["oom_kill"]);
  return {"io.containerd.cgroups.v2.Metrics", metrics.SerializeAsString()};
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

absl::StatusOr<CgroupMetrics> ReadCgroupMetrics(pid_t pid, const std::string& proc_root,
                                                const std::string& cgroup_root) {
  auto m = ReadMembership(proc_root, pid);
  if (!m.ok()) return m.status();
  // runc puts a container in the v1 hierarchies when the host has them (a
  // hybrid host also has an empty unified one); otherwise in the unified one.
  if (!V1Dir(*m, cgroup_root, "memory").empty()) return V1Metrics(*m, cgroup_root);
  if (!m->unified)
    return absl::NotFoundError(fmt::format("process {} is in no cgroup hierarchy", pid));
  return V2Metrics(UnifiedRoot(cgroup_root) + *m->unified);
}

std::string UnifiedRoot(const std::string& cgroup_root) {
  // /sys/fs/cgroup itself, or .../unified on a hybrid host.
  return Exists(cgroup_root + "/cgroup.controllers") ? cgroup_root : cgroup_root + "/unified";
}

absl::StatusOr<CgroupDir> MemoryCgroupOf(pid_t pid, const std::string& proc_root,
                                         const std::string& cgroup_root) {
  auto m = ReadMembership(proc_root, pid);
  if (!m.ok()) return m.status();
  // As ReadCgroupMetrics: the v1 memory hierarchy when the host has one.
  if (std::string dir = V1Dir(*m, cgroup_root, "memory"); !dir.empty())
    return CgroupDir{dir, /*v1=*/true};
  if (!m->unified)
    return absl::NotFoundError(fmt::format("process {} is in no memory cgroup", pid));
  return CgroupDir{UnifiedRoot(cgroup_root) + *m->unified, /*v1=*/false};
}

}  // namespace shim
