// Exit monitor tests: real processes, the real BPF program, pins in a
// private bpffs directory per test. Needs root (suite 'root').
#include "bpf/exit_monitor.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "base/unique_fd.h"
#include "bpf/exit_monitor_abi.h"
#include "bpf/pidfd.h"
#include "test/bpf/exit_monitor_testing.h"

using bpf::ExitMonitor;
using bpf::ExitRecord;
using namespace bpf_test;

TEST_CASE("exit(42) is reported with wait status 0x2a00", "[bpf]") {
  auto flavour = GENERATE(bpf::ExitFlavour::kAuto, bpf::ExitFlavour::kSignalLive);
  TestPins pins;
  auto m = OpenMonitor(pins, flavour);
  Gate gate;
  Child child(gate, [] { return 42; });
  REQUIRE(m->Track(child.pid()).ok());

  int64_t before = Nanos(CLOCK_REALTIME);
  gate.Open();
  Collector col;
  REQUIRE(DrainUntil(*m, col, [&] { return col.count(child.pid()) > 0; }));
  int64_t after = Nanos(CLOCK_REALTIME);
  pid_t pid = child.pid();
  int wait_status = child.Reap();

  const ExitRecord& r = col.only(pid);
  CHECK(col.total == 1);
  CHECK(r.wait_status == 0x2a00);
  CHECK(r.wait_status == wait_status);
  CHECK(WIFEXITED(r.wait_status));
  CHECK(WEXITSTATUS(r.wait_status) == 42);
  // Wall clock, allowing for the boot->realtime conversion's jitter.
  CHECK(r.exited_at_ns >= before - 5000000);
  CHECK(r.exited_at_ns <= after + 5000000);

  auto looked_up = ExitMonitor::LookupExited(pins.dir, pid);
  REQUIRE(looked_up.ok());
  CHECK(looked_up->wait_status == 0x2a00);
  REQUIRE(m->Forget(pid).ok());
  CHECK(absl::IsNotFound(ExitMonitor::LookupExited(pins.dir, pid).status()));
  auto stats = m->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->tracked == 0);
  CHECK(stats->pending_exits == 0);
  CHECK(stats->pinned);
  CHECK(stats->version == ExitMonitor::Version());
}

TEST_CASE("SIGKILL is reported as signal 9, exit code 137", "[bpf]") {
  auto flavour = GENERATE(bpf::ExitFlavour::kAuto, bpf::ExitFlavour::kSignalLive);
  TestPins pins;
  auto m = OpenMonitor(pins, flavour);
  Gate gate;
  Child child(gate, [] { return 0; });
  REQUIRE(m->Track(child.pid()).ok());
  REQUIRE(::kill(child.pid(), SIGKILL) == 0);

  Collector col;
  REQUIRE(DrainUntil(*m, col, [&] { return col.count(child.pid()) > 0; }));
  pid_t pid = child.pid();
  int wait_status = child.Reap();
  const ExitRecord& r = col.only(pid);
  CHECK(r.wait_status == 9);
  CHECK(r.wait_status == wait_status);
  CHECK(WIFSIGNALED(r.wait_status));
  CHECK(WTERMSIG(r.wait_status) == SIGKILL);
}

namespace {
struct ThreadedChild {
  pthread_t leader;
  int leader_gone_w;
  int go_r;
  int64_t* exit_stamp;  // shared with the parent
};

void* LastThread(void* arg) {
  auto* t = static_cast<ThreadedChild*>(arg);
  // glibc has the kernel clear the leader's tid when it exits, so joining
  // the leader returns once it is gone.
  pthread_join(t->leader, nullptr);
  if (::write(t->leader_gone_w, "x", 1) != 1) ::_exit(121);
  char c;
  if (::read(t->go_r, &c, 1) != 1) ::_exit(122);
  *t->exit_stamp = Nanos(CLOCK_BOOTTIME);
  ::syscall(SYS_exit_group, 13);
  return nullptr;
}
}  // namespace

TEST_CASE("a process whose leader exits first is reported once, at its last thread's exit",
          "[bpf]") {
  auto flavour = GENERATE(bpf::ExitFlavour::kAuto, bpf::ExitFlavour::kSignalLive);
  TestPins pins;
  auto m = OpenMonitor(pins, flavour);
  int leader_gone[2], go[2];
  REQUIRE(::pipe2(leader_gone, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  base::UniqueFd leader_gone_r(leader_gone[0]), leader_gone_w(leader_gone[1]);
  base::UniqueFd go_r(go[0]), go_w(go[1]);
  void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(shared != MAP_FAILED);
  auto* exit_stamp = static_cast<int64_t*>(shared);

  Gate gate;
  Child child(gate, [&]() -> int {
    static ThreadedChild t;
    t = {pthread_self(), leader_gone_w.get(), go_r.get(), exit_stamp};
    pthread_t worker;
    if (pthread_create(&worker, nullptr, &LastThread, &t) != 0) return 123;
    // The leader goes first, with status 0. A raw SYS_exit: pthread_exit
    // would unwind through the test framework's frames in this fork.
    ::syscall(SYS_exit, 0);
    return 126;
  });
  REQUIRE(m->Track(child.pid()).ok());
  gate.Open();

  ReadByte(leader_gone_r.get());
  // The leader is gone, the process lives on: nothing to report yet.
  Collector col;
  REQUIRE(m->Drain(col.cb()).ok());
  CHECK(col.count(child.pid()) == 0);
  CHECK(absl::IsNotFound(ExitMonitor::LookupExited(pins.dir, child.pid()).status()));

  REQUIRE(::write(go_w.get(), "x", 1) == 1);
  REQUIRE(DrainUntil(*m, col, [&] { return col.count(child.pid()) > 0; }));
  pid_t pid = child.pid();
  int wait_status = child.Reap();
  // The ring buffer may not repeat it either.
  REQUIRE(m->Drain(col.cb()).ok());

  CHECK(col.count(pid) == 1);
  const ExitRecord& r = col.only(pid);
  CHECK(r.wait_status == 0x0d00);
  CHECK(r.wait_status == wait_status);
  CHECK(r.exit_boottime >= static_cast<uint64_t>(*exit_stamp));
  ::munmap(shared, 4096);
}

TEST_CASE("an exit while no monitor runs is found after reopening the pins", "[bpf]") {
  auto flavour = GENERATE(bpf::ExitFlavour::kAuto, bpf::ExitFlavour::kSignalLive);
  TestPins pins;
  Gate gate;
  Child child(gate, [] { return 7; });
  pid_t pid = child.pid();
  {
    auto m1 = OpenMonitor(pins, flavour);
    auto stats = m1->Stats();
    REQUIRE(stats.ok());
    CHECK_FALSE(stats->reopened);
    REQUIRE(m1->Track(pid).ok());
  }
  // No monitor process holds anything now; only the pins keep the program.
  gate.Open();
  int wait_status = child.Reap();
  CHECK(wait_status == 0x0700);

  auto looked_up = ExitMonitor::LookupExited(pins.dir, pid);
  REQUIRE(looked_up.ok());
  CHECK(looked_up->wait_status == 0x0700);

  auto m2 = OpenMonitor(pins);
  auto stats = m2->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->reopened);
  CHECK(stats->pending_exits == 1);
  auto replay = m2->Replay();
  REQUIRE(replay.ok());
  REQUIRE(replay->size() == 1);
  CHECK((*replay)[0].pid == pid);
  CHECK((*replay)[0].wait_status == 0x0700);

  // The ring buffer still holds the event from the downtime: not again.
  REQUIRE(m2->Forget(pid).ok());
  Collector col;
  auto drained = m2->Drain(col.cb());
  REQUIRE(drained.ok());
  CHECK(*drained == 0);
  CHECK(col.total == 0);

  REQUIRE(m2->Unpin().ok());
  stats = m2->Stats();
  REQUIRE(stats.ok());
  CHECK_FALSE(stats->pinned);
  CHECK(::access(pins.dir.c_str(), F_OK) != 0);
}

TEST_CASE("1000 tracked processes exiting at once: 1000 reports, no duplicates", "[bpf]") {
  auto flavour = GENERATE(bpf::ExitFlavour::kAuto, bpf::ExitFlavour::kSignalLive);
  constexpr int kProcs = 1000;
  TestPins pins;
  auto m = OpenMonitor(pins, flavour);
  Gate gate;
  std::vector<std::unique_ptr<Child>> kids;
  for (int i = 0; i < kProcs; ++i) {
    kids.push_back(std::make_unique<Child>(gate, [i] { return i % 256; }));
    REQUIRE(m->Track(kids.back()->pid()).ok());
  }
  auto stats = m->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->tracked == kProcs);

  gate.Open(kProcs);
  Collector col;
  REQUIRE(DrainUntil(*m, col, [&] { return col.by_pid.size() == kProcs; },
                     std::chrono::seconds(120)));
  REQUIRE(m->Drain(col.cb()).ok());
  CheckEachReportedOnce(*m, col, kids);
  stats = m->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->tracked == 0);
  CHECK(stats->pending_exits == 0);
  CHECK(stats->ringbuf_full == 0);
}

TEST_CASE("a child of a tracked spawner that exits at once is caught", "[bpf]") {
  TestPins pins;
  auto m = OpenMonitor(pins);
  int report[2];
  REQUIRE(::pipe2(report, O_CLOEXEC) == 0);
  base::UniqueFd report_r(report[0]), report_w(report[1]);

  // The spawner forks `children` processes that exit at once, reports their
  // pids, reaps them and exits.
  auto spawner = [&](int children) {
    return [&report_w, children]() -> int {
      for (int i = 0; i < children; ++i) {
        pid_t g = ::fork();
        if (g < 0) return 124;
        if (g == 0) ::_exit(5);
        if (::write(report_w.get(), &g, sizeof(g)) != sizeof(g)) return 125;
        ::waitpid(g, nullptr, 0);
      }
      return 0;
    };
  };
  auto read_pid = [&] {
    pid_t g;
    pollfd p{report_r.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 60000) == 1);
    REQUIRE(::read(report_r.get(), &g, sizeof(g)) == sizeof(g));
    return g;
  };

  SECTION("within the budget") {
    Gate gate;
    Child s(gate, spawner(1));
    REQUIRE(m->TrackSpawner(s.pid()).ok());
    gate.Open();
    pid_t g = read_pid();
    Collector col;
    REQUIRE(DrainUntil(*m, col, [&] { return col.count(g) && col.count(s.pid()); }));
    CHECK(col.only(g).wait_status == 0x0500);
    CHECK(col.only(s.pid()).wait_status == 0);
    CHECK(s.Reap() == 0);
  }

  SECTION("descendants beyond the budget are not tracked") {
    Gate gate;
    Child s(gate, spawner(4));
    REQUIRE(m->TrackSpawner(s.pid(), 2).ok());
    gate.Open();
    std::vector<pid_t> g;
    for (int i = 0; i < 4; ++i) g.push_back(read_pid());
    Collector col;
    // The spawner reaps its children before it exits, so their reports
    // come before its own.
    REQUIRE(DrainUntil(*m, col, [&] { return col.count(s.pid()) > 0; }));
    CHECK(col.count(g[0]) == 1);
    CHECK(col.count(g[1]) == 1);
    CHECK(col.count(g[2]) == 0);
    CHECK(col.count(g[3]) == 0);
    CHECK(s.Reap() == 0);
    auto stats = m->Stats();
    REQUIRE(stats.ok());
    CHECK(stats->tracked == 0);
  }
}

TEST_CASE("a pid reused by an untracked process is not reported as ours", "[bpf]") {
  TestPins pins;
  auto m = OpenMonitor(pins);
  Gate gate;
  Child stranger(gate, [] { return 0; });
  Child sentinel(gate, [] { return 3; });

  // Simulate reuse: an entry for stranger's pid with another start time,
  // written straight into the map, since Track() would refuse it.
  auto start = bpf::ReadStartBoottime(stranger.pid());
  REQUIRE(start.ok());
  base::UniqueFd tracked(bpf_obj_get((m->pin_dir() + "/tracked").c_str()));
  REQUIRE(tracked.valid());
  uint32_t key = stranger.pid();
  em_tracked stale{.start_boottime = *start - 1000000000ull, .spawner = 0, .budget = 0};
  REQUIRE(bpf_map_update_elem(tracked.get(), &key, &stale, BPF_ANY) == 0);
  REQUIRE(m->Track(sentinel.pid()).ok());

  pid_t stranger_pid = stranger.pid();
  REQUIRE(::kill(stranger_pid, SIGKILL) == 0);
  stranger.Reap();
  gate.Open();  // only the sentinel is left to read it
  // Events come in exit order: once the sentinel's is here, stranger's
  // would have been too.
  Collector col;
  REQUIRE(DrainUntil(*m, col, [&] { return col.count(sentinel.pid()) > 0; }));
  CHECK(col.count(stranger_pid) == 0);
  CHECK(col.total == 1);
  CHECK(absl::IsNotFound(ExitMonitor::LookupExited(pins.dir, stranger_pid).status()));
  sentinel.Reap();

  // The stale entry is left for its owner to untrack.
  auto stats = m->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->tracked == 1);
  CHECK(m->Untrack(stranger_pid).ok());
  CHECK(absl::IsNotFound(m->Untrack(stranger_pid)));
}

TEST_CASE("tracking a process that already exited fails instead of missing it", "[bpf]") {
  TestPins pins;
  auto m = OpenMonitor(pins);
  Gate gate;
  Child child(gate, [] { return 1; });
  auto start = bpf::ReadStartBoottime(child.pid());
  REQUIRE(start.ok());
  CHECK(bpf::IsSameLiveProcess(child.pid(), *start).value_or(false));
  gate.Open();
  // Wait for the exit without reaping: the pid stays a zombie.
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, child.pid(), &info, WEXITED | WNOWAIT) == 0);
  CHECK_FALSE(bpf::IsSameLiveProcess(child.pid(), *start).value_or(true));

  absl::Status s = m->Track(child.pid(), *start);
  INFO(s.ToString());
  CHECK(absl::IsFailedPrecondition(s));
  auto stats = m->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->tracked == 0);
  child.Reap();
}

TEST_CASE("a dead loader's leftovers are swept; a partial pin set is refused", "[bpf]") {
  TestPins pins;
  // pid 4194305 is above PID_MAX_LIMIT, so it names no live process.
  std::string debris = pins.dir + "/loading_4194305";
  std::string live = fmt::format("{}/loading_{}", pins.dir, ::getppid());
  REQUIRE(::mkdir(pins.dir.c_str(), 0700) == 0);
  REQUIRE(::mkdir(debris.c_str(), 0700) == 0);
  REQUIRE(::mkdir(live.c_str(), 0700) == 0);
  {
    auto m = OpenMonitor(pins);
    CHECK(::access(debris.c_str(), F_OK) != 0);
    CHECK(::access(live.c_str(), F_OK) == 0);  // its owner may still be at work
    REQUIRE(m->Unpin().ok());
  }
  std::string partial = pins.dir + "/" + ExitMonitor::Version();
  REQUIRE(::mkdir(partial.c_str(), 0700) == 0);
  auto m = ExitMonitor::Open(pins.dir);
  INFO(m.status().ToString());
  CHECK(absl::IsFailedPrecondition(m.status()));
  REQUIRE(ExitMonitor::RemovePins(pins.dir).ok());
  CHECK(::access(pins.dir.c_str(), F_OK) != 0);
}
