// Live upgrade tests: one binary plays an older version "A" and a newer
// version "B" of the exit monitor (OpenOptions::version_override) on one
// instance directory. Needs root (suite 'root').
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "bpf/exit_monitor.h"
#include "test/bpf/exit_monitor_testing.h"

using bpf::ExitMonitor;
using bpf::ExitRecord;
using bpf::UpgradeStep;
using namespace bpf_test;

namespace {

std::unique_ptr<ExitMonitor> OpenVersion(
    const TestPins& pins, std::string version,
    std::function<void(UpgradeStep, pid_t)> hook = nullptr) {
  bpf::OpenOptions options;
  options.version_override = std::move(version);
  options.upgrade_hook = std::move(hook);
  return OpenMonitor(pins, std::move(options));
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// `n` gated children, each exiting with status(i) once let go.
std::vector<std::unique_ptr<Child>> Spawn(Gate& gate, int n, int (*code)(int)) {
  std::vector<std::unique_ptr<Child>> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(std::make_unique<Child>(gate, [i, code] { return code(i); }));
  }
  return kids;
}

// The upgraded monitor's state once it has taken "A" over and every exit
// has been delivered and forgotten: nothing left anywhere.
void CheckClean(ExitMonitor& m, const TestPins& pins) {
  auto stats = m.Stats();
  REQUIRE(stats.ok());
  CHECK(stats->version == "B");
  CHECK(stats->upgraded_from == std::vector<std::string>{"A"});
  CHECK(stats->other_versions.empty());
  CHECK(stats->upgrade_error.empty());
  CHECK(stats->tracked == 0);  // no stale copies of exited processes
  CHECK(stats->pending_exits == 0);
  CHECK_FALSE(Exists(pins.dir + "/A"));
}

}  // namespace

TEST_CASE("an upgrade takes over live tracked processes", "[bpf][upgrade]") {
  constexpr int kProcs = 50;
  TestPins pins;
  auto a = OpenVersion(pins, "A");
  Gate gate;
  auto kids = Spawn(gate, kProcs, [](int i) { return i + 1; });
  for (auto& k : kids) REQUIRE(a->Track(k->pid()).ok());

  auto b = OpenVersion(pins, "B");
  auto stats = b->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->version == "B");
  CHECK(stats->upgraded_from == std::vector<std::string>{"A"});
  CHECK(stats->upgrade_moved_tracked == kProcs);
  CHECK(stats->tracked == kProcs);
  CHECK(stats->other_versions.empty());
  CHECK_FALSE(Exists(pins.dir + "/A"));
  CHECK(Exists(pins.dir + "/B"));
  a.reset();  // the old shim goes; its program with its last link fd

  auto replay = b->Replay();
  REQUIRE(replay.ok());
  CHECK(replay->empty());
  // Half are killed, half exit with codes of their own.
  for (int i = 0; i < kProcs; i += 2) REQUIRE(::kill(kids[i]->pid(), SIGKILL) == 0);
  gate.Open(kProcs);
  Collector col;
  REQUIRE(DrainUntil(*b, col, [&] { return col.by_pid.size() == kProcs; }));
  REQUIRE(b->Drain(col.cb()).ok());
  CHECK(col.total == kProcs);
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = kids[i]->pid();
    REQUIRE(col.count(pid) == 1);
    CHECK(col.only(pid).wait_status == (i % 2 == 0 ? SIGKILL : (i + 1) << 8));
    CHECK(kids[i]->Reap() == col.only(pid).wait_status);
    REQUIRE(b->Forget(pid).ok());
  }
  CheckClean(*b, pins);
}

TEST_CASE("exits the old version recorded before the upgrade are replayed once",
          "[bpf][upgrade]") {
  constexpr int kProcs = 20;
  TestPins pins;
  Gate gate;
  auto kids = Spawn(gate, kProcs, [](int i) { return 100 + i; });
  {
    auto a = OpenVersion(pins, "A");
    for (auto& k : kids) REQUIRE(a->Track(k->pid()).ok());
  }
  // No monitor runs: only A's pins see these exits.
  gate.Open(kProcs);
  std::map<pid_t, int> status;
  for (auto& k : kids) {
    pid_t pid = k->pid();
    status[pid] = k->Reap();
    auto found = ExitMonitor::LookupExited(pins.dir, pid);
    REQUIRE(found.ok());
    CHECK(found->wait_status == status[pid]);
  }

  auto b = OpenVersion(pins, "B");
  auto stats = b->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->upgrade_moved_exits == kProcs);
  CHECK(stats->pending_exits == kProcs);
  CHECK(stats->tracked == 0);
  CHECK_FALSE(Exists(pins.dir + "/A"));

  Collector col;
  auto replay = b->Replay();
  REQUIRE(replay.ok());
  for (const ExitRecord& r : *replay) col.cb()(r);
  // Neither a ring buffer nor a second replay repeats them.
  auto drained = b->Drain(col.cb());
  REQUIRE(drained.ok());
  CHECK(*drained == 0);
  replay = b->Replay();
  REQUIRE(replay.ok());
  CHECK(replay->empty());

  CHECK(col.total == kProcs);
  for (auto [pid, wait_status] : status) {
    REQUIRE(col.count(pid) == 1);
    CHECK(col.only(pid).wait_status == wait_status);
    REQUIRE(b->Forget(pid).ok());
    CHECK(absl::IsNotFound(ExitMonitor::LookupExited(pins.dir, pid).status()));
  }
  CheckClean(*b, pins);
}

TEST_CASE("processes exiting during the upgrade are each reported once", "[bpf][upgrade]") {
  constexpr int kProcs = 200;
  // All at once as the move begins, or one more each time an entry is
  // copied, so that exits land before, between and after the copies.
  bool one_per_copy = GENERATE(false, true);
  TestPins pins;
  auto a = OpenVersion(pins, "A");
  Gate gate;
  auto kids = Spawn(gate, kProcs, [](int i) { return i % 256; });
  for (auto& k : kids) REQUIRE(a->Track(k->pid()).ok());

  size_t released = 0;
  auto b = OpenVersion(pins, "B", [&](UpgradeStep step, pid_t) {
    if (one_per_copy ? step == UpgradeStep::kTrackedCopied : step == UpgradeStep::kBegin) {
      size_t n = one_per_copy ? 1 : kProcs;
      gate.Open(n);
      released += n;
    }
  });
  a.reset();
  // Copies stop coming once the rest have exited uncopied: let the rest go.
  REQUIRE(released > 0);
  if (released < kProcs) gate.Open(kProcs - released);

  Collector col;
  auto replay = b->Replay();
  REQUIRE(replay.ok());
  for (const ExitRecord& r : *replay) col.cb()(r);
  REQUIRE(DrainUntil(*b, col, [&] { return col.by_pid.size() == kProcs; }));
  REQUIRE(b->Drain(col.cb()).ok());
  replay = b->Replay();
  REQUIRE(replay.ok());
  CHECK(replay->empty());

  CheckEachReportedOnce(*b, col, kids);
  CheckClean(*b, pins);
}

TEST_CASE("an exit between copy and delete is recorded by both versions, reported once",
          "[bpf][upgrade]") {
  TestPins pins;
  auto a = OpenVersion(pins, "A");
  Gate gate;
  Child before(gate, [] { return 1; });  // exits before anything moves: A alone sees it
  Child between(gate, [] { return 2; });  // exits while tracked by both
  Child after(gate, [] { return 3; });    // exits once B alone tracks it
  for (Child* c : {&before, &between, &after}) REQUIRE(a->Track(c->pid()).ok());

  std::vector<pid_t> copied;
  auto b = OpenVersion(pins, "B", [&](UpgradeStep step, pid_t pid) {
    if (step == UpgradeStep::kBegin) {
      REQUIRE(::kill(before.pid(), SIGKILL) == 0);
      WaitExited(before.pid());
    }
    if (step == UpgradeStep::kTrackedCopied) {
      copied.push_back(pid);
      if (pid == between.pid()) {
        REQUIRE(::kill(between.pid(), SIGKILL) == 0);
        WaitExited(between.pid());
      }
    }
  });
  a.reset();
  CHECK(copied.size() == 2);  // `before` had gone: nothing to copy
  auto stats = b->Stats();
  REQUIRE(stats.ok());
  CHECK(stats->pending_exits == 2);
  CHECK(stats->tracked == 1);  // `after`: B's copy of `between` was its to delete

  REQUIRE(::kill(after.pid(), SIGKILL) == 0);
  Collector col;
  auto replay = b->Replay();
  REQUIRE(replay.ok());
  for (const ExitRecord& r : *replay) col.cb()(r);
  REQUIRE(DrainUntil(*b, col, [&] { return col.by_pid.size() == 3; }));
  REQUIRE(b->Drain(col.cb()).ok());
  CHECK(col.total == 3);
  for (Child* c : {&before, &between, &after}) {
    pid_t pid = c->pid();
    REQUIRE(col.count(pid) == 1);
    CHECK(col.only(pid).wait_status == SIGKILL);
    CHECK(c->Reap() == SIGKILL);
    REQUIRE(b->Forget(pid).ok());
  }
  CheckClean(*b, pins);
}
