// Exit monitor benchmark: exit -> user-space callback latency over
// sequential exits, open costs (fresh load vs. reopen of pins, and an
// upgrade taking over tracked pids) and the monitor's memory with 1000
// tracked pids. Needs root. Prints markdown.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/unique_fd.h"
#include "bpf/exit_monitor.h"

namespace {

using bpf::ExitMonitor;

int64_t Nanos(clockid_t clock) {
  timespec ts;
  ::clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string g_pin_dir;  // removed on every way out

[[noreturn]] void Die(const std::string& what) {
  fmt::print(stderr, "bench_exit_monitor: {}\n", what);
  if (!g_pin_dir.empty()) (void)ExitMonitor::RemovePins(g_pin_dir);
  std::exit(1);
}

// A "Key: N kB" line of a /proc file, in kB.
long ProcKb(const char* file, const char* key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + std::strlen(key), nullptr, 10);
  }
  return -1;
}

struct Mem {
  long rss, anon, hwm, pss;
};

Mem ReadMem() {
  return {ProcKb("/proc/self/status", "VmRSS:"), ProcKb("/proc/self/status", "RssAnon:"),
          ProcKb("/proc/self/status", "VmHWM:"), ProcKb("/proc/self/smaps_rollup", "Pss:")};
}

struct OpenCost {
  double ms;
  Mem mem;
};

// Opens the monitor in a fresh child so its peak RSS is its own.
OpenCost MeasureOpen(const std::string& dir) {
  int fds[2];
  if (::pipe(fds) != 0) Die("pipe");
  base::UniqueFd r(fds[0]), w(fds[1]);
  pid_t pid = ::fork();
  if (pid == 0) {
    { std::ofstream("/proc/self/clear_refs") << "5"; }  // reset VmHWM
    int64_t t0 = Nanos(CLOCK_MONOTONIC);
    auto m = ExitMonitor::Open(dir);
    OpenCost c{(Nanos(CLOCK_MONOTONIC) - t0) / 1e6, ReadMem()};
    if (!m.ok()) {
      fmt::print(stderr, "bench_exit_monitor: {}\n", m.status().ToString());
      ::_exit(1);
    }
    ::_exit(::write(w.get(), &c, sizeof(c)) == sizeof(c) ? 0 : 1);
  }
  w.Reset();
  OpenCost c{};
  if (::read(r.get(), &c, sizeof(c)) != sizeof(c)) Die("open in child failed");
  ::waitpid(pid, nullptr, 0);
  return c;
}

// Forks a child that waits for a byte on gate_r, runs `then`, and exits.
template <typename F>
pid_t Spawn(int gate_r, F then) {
  pid_t pid = ::fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    char c;
    if (::read(gate_r, &c, 1) != 1) ::_exit(1);
    then();
    ::_exit(0);
  }
  return pid;
}

// Waits on the monitor's fd until `want` exits were delivered to cb.
void WaitExits(ExitMonitor& m, int epfd, size_t want, size_t& got,
               const ExitMonitor::ExitCallback& cb) {
  while (got < want) {
    epoll_event ev;
    if (::epoll_wait(epfd, &ev, 1, 30000) <= 0) Die("timed out waiting for exits");
    if (!m.Drain(cb).ok()) Die("drain");
  }
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  std::string dir = fmt::format("/sys/fs/bpf/cse1-bench-{}", ::getpid());
  g_pin_dir = dir;
  Mem baseline = ReadMem();

  OpenCost fresh = MeasureOpen(dir);   // loads and pins
  OpenCost reopen = MeasureOpen(dir);  // bpf_obj_get only

  auto opened = ExitMonitor::Open(dir);
  if (!opened.ok()) Die(opened.status().ToString());
  ExitMonitor& m = **opened;
  base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, m.fd(), &ev) != 0) Die("epoll_ctl");

  // Latency: the child stamps CLOCK_BOOTTIME just before _exit.
  auto* stamp = static_cast<int64_t*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (stamp == MAP_FAILED) Die("mmap");
  std::vector<double> to_callback_us, to_bpf_us;
  for (int i = 0; i < n; ++i) {
    int g[2];
    if (::pipe(g) != 0) Die("pipe");
    base::UniqueFd gr(g[0]), gw(g[1]);
    pid_t pid = Spawn(gr.get(), [stamp] { *stamp = Nanos(CLOCK_BOOTTIME); });
    if (!m.Track(pid).ok()) Die("track");
    size_t got = 0;
    int64_t cb_at = 0;
    uint64_t bpf_at = 0;
    ExitMonitor::ExitCallback cb = [&](const bpf::ExitRecord& r) {
      cb_at = Nanos(CLOCK_BOOTTIME);
      bpf_at = r.exit_boottime;
      ++got;
    };
    if (::write(gw.get(), "x", 1) != 1) Die("write");
    WaitExits(m, ep.get(), 1, got, cb);
    to_callback_us.push_back((cb_at - *stamp) / 1e3);
    to_bpf_us.push_back((static_cast<int64_t>(bpf_at) - *stamp) / 1e3);
    ::waitpid(pid, nullptr, 0);
    (void)m.Forget(pid);
  }

  // Memory with n tracked pids.
  int g[2];
  if (::pipe(g) != 0) Die("pipe");
  base::UniqueFd gr(g[0]), gw(g[1]);
  std::vector<pid_t> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(Spawn(gr.get(), [] {}));
    if (!m.Track(kids.back()).ok()) Die("track");
  }
  Mem tracked_mem = ReadMem();
  auto stats = m.Stats();
  if (!stats.ok()) Die(stats.status().ToString());
  size_t tracked_count = stats->tracked;
  std::string all(n, 'x');
  if (::write(gw.get(), all.data(), n) != n) Die("write");
  size_t got = 0;
  WaitExits(m, ep.get(), n, got, [&](const bpf::ExitRecord&) { ++got; });
  for (pid_t pid : kids) {
    ::waitpid(pid, nullptr, 0);
    (void)m.Forget(pid);
  }
  (void)m.Unpin();

  // Upgrade: Open of a newer version taking over n tracked pids (this one
  // binary plays both versions, as the tests do).
  bpf::OpenOptions old_version, new_version;
  old_version.version_override = "bench_old";
  new_version.version_override = "bench_new";
  auto a = ExitMonitor::Open(dir, old_version);
  if (!a.ok()) Die(a.status().ToString());
  int ug[2];
  if (::pipe(ug) != 0) Die("pipe");
  base::UniqueFd ugr(ug[0]), ugw(ug[1]);
  kids.clear();
  for (int i = 0; i < n; ++i) {
    kids.push_back(Spawn(ugr.get(), [] {}));
    if (!(*a)->Track(kids.back()).ok()) Die("track");
  }
  int64_t t0 = Nanos(CLOCK_MONOTONIC);
  auto b = ExitMonitor::Open(dir, new_version);
  double upgrade_ms = (Nanos(CLOCK_MONOTONIC) - t0) / 1e6;
  if (!b.ok()) Die(b.status().ToString());
  auto b_stats = (*b)->Stats();
  if (!b_stats.ok() || b_stats->upgrade_moved_tracked != static_cast<size_t>(n)) {
    Die("the upgrade did not move every tracked pid");
  }
  a->reset();
  base::UniqueFd ep_b(::epoll_create1(EPOLL_CLOEXEC));
  if (::epoll_ctl(ep_b.get(), EPOLL_CTL_ADD, (*b)->fd(), &ev) != 0) Die("epoll_ctl");
  if (::write(ugw.get(), all.data(), n) != n) Die("write");
  got = 0;
  WaitExits(**b, ep_b.get(), n, got, [&](const bpf::ExitRecord&) { ++got; });
  for (pid_t pid : kids) ::waitpid(pid, nullptr, 0);
  (void)ExitMonitor::RemovePins(dir);

  fmt::print("| metric | value |\n|---|---|\n");
  fmt::print("| exit -> callback, median ({} sequential exits) | {:.0f} us |\n", n,
             Percentile(to_callback_us, 0.5));
  fmt::print("| exit -> callback, p99 | {:.0f} us |\n", Percentile(to_callback_us, 0.99));
  fmt::print("| exit -> BPF timestamp, median / p99 | {:.0f} / {:.0f} us |\n",
             Percentile(to_bpf_us, 0.5), Percentile(to_bpf_us, 0.99));
  fmt::print("| fresh load+attach+pin: time / peak RSS / RSS after | {:.1f} ms / {:.1f} / {:.1f} MiB |\n",
             fresh.ms, fresh.mem.hwm / 1024.0, fresh.mem.rss / 1024.0);
  fmt::print("| reopen pins: time / peak RSS / RSS after | {:.2f} ms / {:.1f} / {:.1f} MiB |\n",
             reopen.ms, reopen.mem.hwm / 1024.0, reopen.mem.rss / 1024.0);
  fmt::print("| upgrade: new version's open (fresh load + takeover of {} tracked pids) | {:.1f} ms |\n", n,
             upgrade_ms);
  fmt::print("| process before any open: RSS / anon | {:.1f} / {:.2f} MiB |\n",
             baseline.rss / 1024.0, baseline.anon / 1024.0);
  fmt::print("| {} tracked pids ({} in map): RSS / anon / PSS | {:.1f} / {:.2f} / {:.1f} MiB |\n",
             n, tracked_count, tracked_mem.rss / 1024.0, tracked_mem.anon / 1024.0,
             tracked_mem.pss / 1024.0);
  return 0;
}
