// `ctr task exec` end to end, against containerd's io.containerd.runc.v2 and
// our io.containerd.embed.v1 (see exec_util.h for how the embed variants are
// gated): exit codes and output, many execs in a row and at once leaving
// nothing behind, the errors containerd's clients rely on, and the order of
// the exits when the init dies under a running exec. The tty cases are in
// tty_test.cc.
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"
#include "test/integration/exec_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace exec_e2e;

// What a shim could leave behind after execs, seen from outside.
struct Leftovers {
  std::vector<pid_t> task_pids;        // `ctr task ps`: the container's processes
  std::vector<std::string> bundle;     // the task's bundle directory
  std::vector<std::string> fifos;      // ctr's --fifo-dir (one directory per process)
  // Our shim only (runc.v2 runs one Go process per container, whose fds
  // are not ours to count):
  std::vector<std::string> server_fds;
  std::vector<std::string> keeper_fds;
  std::vector<pid_t> server_children;  // zombies included
  std::vector<std::string> records;    // state/<ns>/ of the instance
};

Leftovers TakeLeftovers(E2E& e, const Runtime& rt, const std::string& ns,
                        const std::string& task) {
  Leftovers l;
  l.task_pids = TaskPids(e.cd(), ns, task);
  l.bundle = DirEntries(e.Bundle(ns, task));
  l.fifos = DirEntries(FifoDir(e.cd()));
  if (rt.embed) {
    const pid_t server = e.TheDaemon();
    l.server_fds = FdTable(server);
    for (pid_t k : e.processes().keepers) l.keeper_fds = FdTable(k);
    l.server_children = test_support::ChildrenOf(server);
    std::sort(l.server_children.begin(), l.server_children.end());
    l.records = DirEntries(e.instance().state + "/" + ns);
  }
  return l;
}

std::string PidsText(const std::vector<pid_t>& pids) {
  std::string s;
  for (pid_t p : pids) s += fmt::format("{} ({}) ", p, CmdlineText(p));
  return s;
}

void CheckNothingLeft(const Leftovers& before, const Leftovers& after) {
  {
    INFO("container processes before: " << PidsText(before.task_pids)
                                        << "\nafter: " << PidsText(after.task_pids));
    CHECK(after.task_pids == before.task_pids);
  }
  {
    INFO("bundle before:\n" << Joined(before.bundle) << "\nafter:\n" << Joined(after.bundle));
    CHECK(after.bundle == before.bundle);
  }
  {
    INFO("fifo dir before:\n" << Joined(before.fifos) << "\nafter:\n" << Joined(after.fifos));
    CHECK(after.fifos == before.fifos);
  }
  {
    INFO("server fds before (" << before.server_fds.size() << "):\n" << Joined(before.server_fds)
                               << "\nafter (" << after.server_fds.size() << "):\n"
                               << Joined(after.server_fds));
    CHECK(after.server_fds.size() == before.server_fds.size());
  }
  {
    INFO("keeper fds before (" << before.keeper_fds.size() << "):\n" << Joined(before.keeper_fds)
                               << "\nafter (" << after.keeper_fds.size() << "):\n"
                               << Joined(after.keeper_fds));
    CHECK(after.keeper_fds.size() == before.keeper_fds.size());
  }
  {
    INFO("server children before: " << PidsText(before.server_children)
                                    << "\nafter: " << PidsText(after.server_children));
    CHECK(after.server_children == before.server_children);
  }
  {
    INFO("records before:\n" << Joined(before.records) << "\nafter:\n" << Joined(after.records));
    CHECK(after.records == before.records);
  }
}

// A fresh fixture, namespace and running `sleep` container for one case.
struct Box {
  std::unique_ptr<E2E> e = E2E::Start();
  std::string ns = UniqueName("exec");
  std::string rootfs = e->Rootfs();
  std::string task = UniqueName("box");
  pid_t init = 0;

  explicit Box(const Runtime& rt) { init = RunSleeper(e->cd(), rt, ns, rootfs, task); }
  PrivateContainerd& cd() { return e->cd(); }
};

void ExitCodeThenManyInARow(const Runtime& rt) {
  Box box(rt);

  Result r = Exec(box.cd(), rt, box.ns, box.task, "exit3",
                  {"sh", "-c", "echo out-$((1+2)); echo err-$((2+2)) >&2; exit 3"});
  {
    INFO(r << "\nshim log:\n" << box.e->ShimLog());
    CHECK(r.exit_code == 3);
    CHECK(r.out == "out-3\n");
    CHECK(Contains(r.err, "err-4\n"));
  }

  // The first exec above warmed up whatever the shim keeps for good.
  const Leftovers before = TakeLeftovers(*box.e, rt, box.ns, box.task);
  constexpr int kExecs = 200;
  int succeeded = 0;
  for (int i = 0; i < kExecs; ++i) {
    Result t = Exec(box.cd(), rt, box.ns, box.task, fmt::format("true-{}", i), {"true"});
    if (t.exit_code != 0) {
      INFO("exec " << i << " of " << kExecs << ": " << t << "\nshim log:\n" << box.e->ShimLog());
      CHECK(t.exit_code == 0);
      break;
    }
    ++succeeded;
  }
  CHECK(succeeded == kExecs);
  const Leftovers after = TakeLeftovers(*box.e, rt, box.ns, box.task);
  CheckNothingLeft(before, after);
  CHECK(after.task_pids == std::vector<pid_t>{box.init});
  CHECK(ListTasks(box.cd(), box.ns)[box.task].status == "RUNNING");
}
EXEC_RUNTIME_CASES("exec: exit code 3 comes back, then 200 execs of true in a row all exit 0 "
                   "and leave no fd, fifo or process behind",
                   "[containerd][exec]", ExitCodeThenManyInARow)

void ManyAtOnce(const Runtime& rt) {
  Box box(rt);
  const std::vector<std::string> fifos_before = DirEntries(FifoDir(box.cd()));
  constexpr int kExecs = 50;
  std::vector<Subprocess> ctrs;
  for (int i = 0; i < kExecs; ++i) {
    absl::StatusOr<Subprocess> p = box.cd().RunCtrAsync(
        ExecArgs(box.cd(), box.ns, box.task, fmt::format("at-once-{}", i), {"true"}));
    REQUIRE_OK(p);
    ctrs.push_back(std::move(*p));
  }
  const Deadline deadline = DeadlineIn(300s);
  int succeeded = 0;
  std::string failures;
  for (int i = 0; i < kExecs; ++i) {
    absl::StatusOr<test_support::ExitStatus> st = ctrs[i].Wait(deadline);
    FailIfUnimplemented(rt, ctrs[i].err());
    if (st.ok() && st->success()) {
      ++succeeded;
    } else {
      failures += fmt::format("exec {}: {} err '{}'\n", i,
                              st.ok() ? st->ToString() : st.status().ToString(), ctrs[i].err());
    }
  }
  INFO(failures << "shim log:\n" << box.e->ShimLog());
  CHECK(succeeded == kExecs);
  CHECK(TaskPids(box.cd(), box.ns, box.task) == std::vector<pid_t>{box.init});
  CHECK(DirEntries(FifoDir(box.cd())) == fifos_before);
  CHECK(ListTasks(box.cd(), box.ns)[box.task].status == "RUNNING");
}
EXEC_RUNTIME_CASES("exec: 50 execs of true started at once (50 ctr processes) all exit 0",
                   "[containerd][exec]", ManyAtOnce)

void Errors(const Runtime& rt) {
  Box box(rt);

  SECTION("a second exec with the id of a running one: already exists, the first unharmed") {
    absl::StatusOr<Subprocess> first = box.cd().RunCtrAsync(
        ExecArgs(box.cd(), box.ns, box.task, "dup",
                 {"sh", "-c", "echo ready-$((1+1)); exec sleep 100000"}));
    REQUIRE_OK(first);
    absl::Status ready = first->WaitForOutput("ready-2", DeadlineIn(60s));
    if (!ready.ok()) FailIfUnimplemented(rt, first->err());
    {
      INFO("first exec: " << first->err() << "\nshim log:\n" << box.e->ShimLog());
      REQUIRE_OK(ready);
    }
    Result dup = Exec(box.cd(), rt, box.ns, box.task, "dup", {"true"});
    INFO(dup);
    CHECK(dup.exit_code != 0);
    CHECK(Contains(dup.err, "already exists"));
    CHECK(TaskPids(box.cd(), box.ns, box.task).size() == 2);  // init + the first exec

    CtrOk(box.cd(), {"-n", box.ns, "task", "kill", "-s", "SIGKILL", "--exec-id", "dup", box.task});
    absl::StatusOr<test_support::ExitStatus> st = first->Wait(DeadlineIn(60s));
    INFO("first exec: out '" << first->out() << "' err '" << first->err() << "'");
    REQUIRE_OK(st);
    CHECK(st->ShellCode() == 137);
    // Deleted with its ctr: the id is free again.
    Result again = Exec(box.cd(), rt, box.ns, box.task, "dup", {"true"});
    INFO(again);
    CHECK(again.exit_code == 0);
  }

  SECTION("a missing binary: the runtime's error, and the task still runs") {
    Result r = Exec(box.cd(), rt, box.ns, box.task, "missing", {"/no/such/binary"});
    INFO(r << "\nshim log:\n" << box.e->ShimLog());
    CHECK(r.exit_code != 0);
    // runc's own text (runc.v2 adds "OCI runtime exec failed: " before it).
    CHECK(Contains(r.err, "stat /no/such/binary: no such file or directory"));
    std::map<std::string, Task> tasks = ListTasks(box.cd(), box.ns);
    INFO(TasksText(tasks));
    CHECK(tasks[box.task].status == "RUNNING");
    CHECK(tasks[box.task].pid == box.init);
    CHECK(TaskPids(box.cd(), box.ns, box.task) == std::vector<pid_t>{box.init});
    Result after = Exec(box.cd(), rt, box.ns, box.task, "after", {"true"});
    INFO(after);
    CHECK(after.exit_code == 0);
  }

  SECTION("an exec in a stopped task fails, and the task stays as it was") {
    const std::string done = UniqueName("done");
    CtrOk(box.cd(),
          RunArgsFor(box.cd(), rt, box.ns, {"-d"}, box.rootfs, done, {"sh", "-c", "exit 5"}));
    std::map<std::string, Task> tasks =
        WaitTaskStatus(box.cd(), box.ns, done, "STOPPED", DeadlineIn(60s));
    {
      INFO(TasksText(tasks));
      REQUIRE(tasks[done].status == "STOPPED");
    }
    Result r = Exec(box.cd(), rt, box.ns, done, "late", {"true"});
    INFO(r << "\nshim log:\n" << box.e->ShimLog());
    // runc.v2 1.6.20: "ctr: cannot exec in a stopped state: unknown".
    CHECK(r.exit_code != 0);
    CHECK(Contains(r.err, "ctr: "));
    if (rt.embed) CHECK(Contains(r.err, "failed precondition"));
    tasks = ListTasks(box.cd(), box.ns);
    CHECK(tasks[done].status == "STOPPED");
    // Deleted with the init's status, as if no exec had been tried.
    absl::StatusOr<Result> rm = box.cd().Ctr({"-n", box.ns, "task", "rm", done});
    REQUIRE_OK(rm);
    INFO(*rm);
    CHECK(rm->exit_code == 0);
    CHECK(Contains(rm->err, "exit code 5"));
  }
}
EXEC_RUNTIME_CASES("exec: a duplicate id, a missing binary and a stopped task are errors",
                   "[containerd][exec]", Errors)

void InitExitsUnderAnExec(const Runtime& rt) {
  auto e = E2E::Start();
  const std::string ns = UniqueName("initexit");
  const std::string rootfs = e->Rootfs();
  const std::string task = UniqueName("box");
  survival::EventLog events(e->cd());
  RunSleeper(e->cd(), rt, ns, rootfs, task);

  absl::StatusOr<Subprocess> exec = e->cd().RunCtrAsync(
      ExecArgs(e->cd(), ns, task, "long", {"sh", "-c", "echo ready-$((1+1)); exec sleep 100000"}));
  REQUIRE_OK(exec);
  absl::Status ready = exec->WaitForOutput("ready-2", DeadlineIn(60s));
  if (!ready.ok()) FailIfUnimplemented(rt, exec->err());
  {
    INFO("exec: " << exec->err() << "\nshim log:\n" << e->ShimLog());
    REQUIRE_OK(ready);
  }

  // The init alone; the kernel then kills the rest of its pid namespace.
  CtrOk(e->cd(), {"-n", ns, "task", "kill", "-s", "SIGKILL", task});
  absl::StatusOr<test_support::ExitStatus> st = exec->Wait(DeadlineIn(60s));
  {
    INFO("exec: out '" << exec->out() << "' err '" << exec->err() << "'");
    REQUIRE_OK(st);
    CHECK(st->ShellCode() == 137);
  }
  // TaskExit starts {"container_id":C,"id":ID,"pid":...}; nothing else has
  // "id" right after "container_id".
  const std::string init_exit = fmt::format(R"("container_id":"{}","id":"{}","pid")", task, task);
  const std::string exec_exit = fmt::format(R"("container_id":"{}","id":"long","pid")", task);
  CHECK_OK(events.WaitFor(init_exit, DeadlineIn(60s)));
  CHECK_OK(events.WaitFor(exec_exit, DeadlineIn(60s)));

  std::vector<Event> exits;
  // The exec's own events, once each, in containerd's order: added, started
  // (with the pid its exit then names), exit.
  std::vector<std::string> exec_topics;
  int64_t started_pid = -1, exited_pid = -2;
  for (Event& ev : ParseEvents(events.Text())) {
    if (ev.ns != ns) continue;
    const bool of_exec = JsonString(ev.json, "exec_id") == "long" ||
                         (ev.topic == "/tasks/exit" && JsonString(ev.json, "id") == "long");
    if (of_exec) exec_topics.push_back(ev.topic);
    if (of_exec && ev.topic == "/tasks/exec-started") started_pid = JsonNumber(ev.json, "pid");
    if (of_exec && ev.topic == "/tasks/exit") exited_pid = JsonNumber(ev.json, "pid");
    if (ev.topic == "/tasks/exit") exits.push_back(std::move(ev));
  }
  INFO("events:\n" << events.Text() << "\nshim log:\n" << e->ShimLog());
  CHECK(exec_topics ==
        std::vector<std::string>{"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"});
  CHECK(started_pid == exited_pid);
  REQUIRE(exits.size() == 2);
  std::map<std::string, size_t> at;
  for (size_t i = 0; i < exits.size(); ++i) {
    CHECK(JsonString(exits[i].json, "container_id") == task);
    CHECK(JsonNumber(exits[i].json, "exit_status") == 137);
    at[JsonString(exits[i].json, "id")] = i;
  }
  REQUIRE(at.contains("long"));
  REQUIRE(at.contains(task));
  // runc.v2 1.6.20 does not promise this order (1.6.36 does); we do.
  if (rt.embed) CHECK(at["long"] < at[task]);
}
EXEC_RUNTIME_CASES("exec: the init killed under a running exec: both exit 137, the exec's "
                   "/tasks/exit first",
                   "[containerd][exec]", InitExitsUnderAnExec)

}  // namespace
