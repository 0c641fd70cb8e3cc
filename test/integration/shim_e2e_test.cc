// containerd-shim-embed-v1 end to end on a stock containerd 1.6: `ctr` drives
// a private containerd (test/support/private_containerd.h) whose PATH finds
// our shim first, and the test watches what it does from the outside (ctr's
// output and exit codes, /proc, the instance directory, bpffs pins) or calls
// its Task service directly over ttrpc. Needs root.
//
// Lifecycle, many containers, namespaces, crun, bad input, cleanup and the
// `delete` subcommand are here; stdio is in shim_e2e_io_test.cc. Helpers and
// the per-case fixture (E2E) are in shim_e2e_util.h.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/absl_fmt.h"
#include "google/protobuf/empty.pb.h"
#include "shim.pb.h"
#include "test/integration/shim_e2e_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace e2e;
namespace task = containerd::task::v2;

// The process behind a task pid is the container's command.
void CheckIsContainerProcess(pid_t pid, const std::string& what) {
  INFO("pid " << pid << " cmdline '" << CmdlineText(pid) << "'");
  CHECK(Alive(pid));
  CHECK(Contains(CmdlineText(pid), what));
}

}  // namespace

TEST_CASE("shim e2e: 20 containers started at once are RUNNING under one shim daemon",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("many");
  const std::string rootfs = e->Rootfs();

  constexpr int kContainers = 20;
  std::vector<std::string> ids;
  std::vector<Subprocess> runs;
  for (int i = 0; i < kContainers; ++i) {
    ids.push_back(UniqueName(fmt::format("c{}", i)));
    absl::StatusOr<Subprocess> p = e->cd().RunCtrAsync(
        RunArgs(ns, {"-d"}, rootfs, ids.back(), {"sleep", "100000"}));
    REQUIRE_OK(p);
    runs.push_back(std::move(*p));
  }
  Deadline deadline = DeadlineIn(120s);
  for (size_t i = 0; i < runs.size(); ++i) {
    absl::StatusOr<test_support::ExitStatus> st = runs[i].Wait(deadline);
    INFO("ctr run -d " << ids[i] << ": out '" << runs[i].out() << "' err '" << runs[i].err() << "'");
    REQUIRE_OK(st);
    CHECK(st->success());
  }

  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks));
  CHECK(tasks.size() == kContainers);
  std::set<pid_t> pids;
  for (const std::string& id : ids) {
    INFO("task " << id);
    REQUIRE(tasks.contains(id));
    CHECK(tasks[id].status == "RUNNING");
    CheckIsContainerProcess(tasks[id].pid, "sleep");
    pids.insert(tasks[id].pid);
  }
  CHECK(pids.size() == kContainers);  // twenty distinct processes

  ShimProcesses procs = e->processes();
  INFO("shim processes for " << e->address() << ": " << procs.ToString());
  REQUIRE(procs.servers.size() == 1);
  CHECK(procs.keepers.size() <= 1);
  // ...and every task's connection reaches it: containerd was given one
  // address, a socket in our instance directory. containerd 1.6 reads it back
  // from <bundle>/address after a restart (runtime/v2/shim.go loadShim); the
  // shim's `start` writes that file (runc-v2: shim.WriteAddress("address")).
  std::set<std::string> addresses;
  std::string missing;
  for (const std::string& id : ids) {
    absl::StatusOr<std::string> address = test_support::ReadFile(e->Bundle(ns, id) + "/address");
    if (address.ok()) addresses.insert(*address);
    else missing += address.status().ToString() + "\n";
  }
  {
    INFO("bundles without an address file:\n" << missing);
    CHECK(missing.empty());
  }
  if (!addresses.empty()) {
    INFO("addresses: " << *addresses.begin());
    CHECK(addresses.size() == 1);
    CHECK(addresses.begin()->starts_with("unix://" + e->instance().dir + "/"));
    CHECK(PathExists(std::string(base::SocketPath(*addresses.begin()))));
  }
  CHECK(PathExists(e->instance().Record(ns, ids.front())));
}

TEST_CASE("shim e2e: ctr run --rm returns the container's exit code 7",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("exit");
  const std::string rootfs = e->Rootfs();
  const std::string id = UniqueName("exit7");
  absl::StatusOr<Result> r =
      e->cd().Ctr(RunArgs(ns, {"--rm"}, rootfs, id, {"sh", "-c", "exit 7"}));
  REQUIRE_OK(r);
  INFO(*r << "\nshim log:\n" << e->ShimLog());
  CHECK(r->exit_code == 7);
  // Not a constant: another status comes through as itself.
  absl::StatusOr<Result> r3 =
      e->cd().Ctr(RunArgs(ns, {"--rm"}, rootfs, UniqueName("exit3"), {"sh", "-c", "exit 3"}));
  REQUIRE_OK(r3);
  INFO(*r3);
  CHECK(r3->exit_code == 3);
  // --rm removed it, through our Delete.
  CHECK(CtrOk(e->cd(), {"-n", ns, "containers", "ls", "-q"}).empty());
  CHECK(ListTasks(e->cd(), ns).empty());
  CHECK_FALSE(PathExists(e->Bundle(ns, id)));
}

TEST_CASE("shim e2e: an init that exits while its other processes still die: ctr run --rm gets its code",
          "[containerd][shim][e2e]") {
  // When the init of a pid namespace exits, the kernel kills the rest of the
  // namespace, and the init becomes a zombie only once they are all gone
  // (zap_pid_ns_processes). A dd with a 256 MiB buffer takes a while to
  // unmap it. The exit is only final then: `runc delete` before that says
  // "cannot delete container ... that is not stopped: running".
  auto e = E2E::Start();
  const std::string ns = UniqueName("slowexit");
  const std::string rootfs = e->Rootfs();
  absl::StatusOr<Result> r = e->cd().Ctr(RunArgs(
      ns, {"--rm"}, rootfs, UniqueName("slow"),
      {"sh", "-c", "dd if=/dev/zero of=/dev/null bs=256M 2>/dev/null & usleep 300000; exit 3"}));
  REQUIRE_OK(r);
  INFO(*r << "\nshim log:\n" << e->ShimLog());
  CHECK(r->exit_code == 3);
  CHECK(r->err.empty());
  CHECK(CtrOk(e->cd(), {"-n", ns, "containers", "ls", "-q"}).empty());
}

TEST_CASE("shim e2e: SIGKILL of the task makes the foreground ctr run exit 137",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("kill");
  const std::string rootfs = e->Rootfs();
  const std::string id = UniqueName("victim");
  absl::StatusOr<Subprocess> run = e->cd().RunCtrAsync(
      RunArgs(ns, {}, rootfs, id, {"sh", "-c", "echo ready; exec sleep 100000"}));
  REQUIRE_OK(run);
  {
    absl::Status ready = run->WaitForOutput("ready", DeadlineIn(60s));
    INFO("ctr run err: " << run->err() << "\nshim log:\n" << e->ShimLog());
    REQUIRE_OK(ready);
  }
  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks));
  REQUIRE(tasks[id].status == "RUNNING");
  const pid_t pid = tasks[id].pid;
  base::UniqueFd pidfd = OpenPidfd(pid);
  REQUIRE(pidfd.valid());
  CheckIsContainerProcess(pid, "sleep");

  CtrOk(e->cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", id});
  absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(30s));
  INFO("ctr run out '" << run->out() << "' err '" << run->err() << "'\nshim log:\n"
                       << e->ShimLog());
  REQUIRE_OK(st);
  CHECK(st->exited());
  CHECK(st->code == 137);
  CHECK(WaitExited(pidfd, DeadlineIn(5s)));
  // containerd learnt the status from us: the task is STOPPED until deleted.
  tasks = ListTasks(e->cd(), ns);
  if (tasks.contains(id)) CHECK(tasks[id].status == "STOPPED");
}

TEST_CASE("shim e2e: ctr task ps lists the container's pids", "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("ps");
  const std::string rootfs = e->Rootfs();

  SECTION("a single process: the init pid") {
    const std::string id = UniqueName("one");
    const pid_t init = RunDetached(e->cd(), ns, rootfs, id, {"sleep", "100000"});
    std::string out = CtrOk(e->cd(), {"-n", ns, "tasks", "ps", id});
    INFO(out);
    std::vector<pid_t> pids;
    for (const std::string& line : test_support::SplitLines(out)) {
      std::vector<std::string> f = test_support::Split(line, ' ');
      if (!f.empty() && f[0] != "PID") pids.push_back(static_cast<pid_t>(std::stol(f[0])));
    }
    CHECK(pids == std::vector<pid_t>{init});
  }

  SECTION("a shell with a background child: two pids, init and its child") {
    const std::string id = UniqueName("two");
    // Foreground, so that "started" tells the child was forked.
    absl::StatusOr<Subprocess> run = e->cd().RunCtrAsync(RunArgs(
        ns, {}, rootfs, id, {"sh", "-c", "sleep 1000 & echo started; sleep 1001"}));
    REQUIRE_OK(run);
    {
      absl::Status ready = run->WaitForOutput("started", DeadlineIn(60s));
      INFO("ctr run err: " << run->err() << "\nshim log:\n" << e->ShimLog());
      REQUIRE_OK(ready);
    }
    std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
    INFO(TasksText(tasks));
    REQUIRE(tasks.contains(id));
    const pid_t init = tasks[id].pid;
    std::string out = CtrOk(e->cd(), {"-n", ns, "tasks", "ps", id});
    INFO(out);
    std::set<pid_t> pids;
    for (const std::string& line : test_support::SplitLines(out)) {
      std::vector<std::string> f = test_support::Split(line, ' ');
      if (!f.empty() && f[0] != "PID") pids.insert(static_cast<pid_t>(std::stol(f[0])));
    }
    // The container's processes, from the kernel: init and its children.
    std::set<pid_t> expected = {init};
    for (pid_t child : test_support::ChildrenOf(init)) expected.insert(child);
    CHECK(expected.size() == 2);
    CHECK(pids == expected);
    CHECK(pids.contains(init));
    CtrOk(e->cd(), {"-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id});
    absl::StatusOr<test_support::ExitStatus> st = run->Wait(DeadlineIn(30s));
    REQUIRE_OK(st);
    CHECK(st->code == 137);
  }
}

TEST_CASE("shim e2e: two namespaces share the one shim without seeing each other",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns_a = UniqueName("nsa");
  const std::string ns_b = UniqueName("nsb");
  const std::string rootfs = e->Rootfs();
  const std::string same = UniqueName("same");
  const std::string only_b = UniqueName("onlyb");

  const pid_t pid_a = RunDetached(e->cd(), ns_a, rootfs, same, {"sleep", "100000"});
  const pid_t pid_b = RunDetached(e->cd(), ns_b, rootfs, same, {"sleep", "100001"});
  const pid_t pid_only_b = RunDetached(e->cd(), ns_b, rootfs, only_b, {"sleep", "100002"});
  CHECK(pid_a != pid_b);
  CheckIsContainerProcess(pid_a, "100000");
  CheckIsContainerProcess(pid_b, "100001");

  std::map<std::string, Task> a = ListTasks(e->cd(), ns_a);
  std::map<std::string, Task> b = ListTasks(e->cd(), ns_b);
  INFO("A:\n" << TasksText(a) << "B:\n" << TasksText(b));
  CHECK(a.size() == 1);
  CHECK(a[same].pid == pid_a);
  CHECK_FALSE(a.contains(only_b));
  CHECK(b.size() == 2);
  CHECK(b[same].pid == pid_b);
  CHECK(b[only_b].pid == pid_only_b);

  // Each namespace's request reaches its own container.
  CtrOk(e->cd(), {"-n", ns_a, "tasks", "kill", "-s", "SIGKILL", same});
  base::UniqueFd fd_a = OpenPidfd(pid_a);
  CHECK((!fd_a.valid() || WaitExited(fd_a, DeadlineIn(10s))));
  CHECK(Alive(pid_b));
  b = ListTasks(e->cd(), ns_b);
  CHECK(b[same].status == "RUNNING");
  // A's task is stopped (or gone); B's same-named one is untouched.
  CtrOk(e->cd(), {"-n", ns_a, "tasks", "rm", same});
  CtrOk(e->cd(), {"-n", ns_a, "containers", "rm", same});
  CHECK(ListTasks(e->cd(), ns_a).empty());
  b = ListTasks(e->cd(), ns_b);
  INFO("B after A's delete:\n" << TasksText(b));
  CHECK(b.size() == 2);
  CHECK(b[same].status == "RUNNING");
  CHECK(Alive(pid_b));

  // The shim's own view through its Task API: namespaces are keys.
  auto client = e->ShimClient();
  task::StateRequest state;
  state.set_id(same);
  absl::StatusOr<task::StateResponse> sa =
      client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(ns_a));
  CHECK(absl::IsNotFound(sa.status()));
  absl::StatusOr<task::StateResponse> sb =
      client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(ns_b));
  REQUIRE_OK(sb);
  CHECK(static_cast<pid_t>(sb->pid()) == pid_b);
  task::StateRequest state_only_b;
  state_only_b.set_id(only_b);
  CHECK(absl::IsNotFound(
      client->Call<task::StateResponse>(kTaskService, "State", state_only_b, CallIn(ns_a))
          .status()));

  ShimProcesses procs = e->processes();
  INFO(procs.ToString());
  CHECK(procs.servers.size() == 1);
  CHECK(procs.keepers.size() <= 1);
}

// crun 1.8 refuses hybrid cgroup hosts whose cgroup2 has controllers
// ("cgroups in hybrid mode not supported", libcrun/cgroup.c), whatever its
// cgroup manager; Debian 12 on this machine kind is such a host.
bool CrunRefusesThisHost() {
  absl::StatusOr<std::string> controllers =
      test_support::ReadFile("/sys/fs/cgroup/unified/cgroup.controllers");
  return controllers.ok() && !test_support::SplitLines(*controllers).empty();
}

// `ctr run -d --runtime-config-path <file with BinaryName = binary>` and the
// whole lifecycle, checking at each step that `binary` (a crun) did it.
void CheckLifecycleWithCrun(E2E& e, const std::string& ns, const std::string& rootfs,
                            const std::string& binary) {
  const std::string config = e.cd().dir() + "/" + UniqueName("runtime") + ".toml";
  REQUIRE_OK(test_support::WriteFile(
      config, fmt::format("# runtime options for the embed shim\nBinaryName = \"{}\"\n", binary)));
  const std::string id = UniqueName("viacrun");
  const pid_t pid = RunDetached(e.cd(), ns, rootfs, id, {"sleep", "100000"},
                                {"--runtime-config-path", config});
  CheckIsContainerProcess(pid, "sleep");

  // Both runtimes keep state under the same --root; each knows only its own
  // (crun: <root>/<id>/status, runc: <root>/<id>/state.json).
  const std::string root = "/run/containerd/runc/" + ns;
  absl::StatusOr<Result> crun_state = test_support::Run({"crun", "--root", root, "state", id});
  REQUIRE_OK(crun_state);
  INFO("crun state: " << *crun_state << "\nshim log:\n" << e.ShimLog());
  CHECK(crun_state->exit_code == 0);
  CHECK(Contains(crun_state->out, fmt::format("\"pid\": {}", pid)));
  absl::StatusOr<Result> runc_state = test_support::Run({"runc", "--root", root, "state", id});
  REQUIRE_OK(runc_state);
  INFO("runc state: " << *runc_state);
  CHECK(runc_state->exit_code != 0);
  CHECK(Contains(e.ShimLog(), "runtime=" + binary));

  // The rest of the lifecycle goes through crun too: ps, kill, delete.
  std::string ps = CtrOk(e.cd(), {"-n", ns, "tasks", "ps", id});
  CHECK(Contains(ps, std::to_string(pid)));
  CtrOk(e.cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", id});
  base::UniqueFd fd = OpenPidfd(pid);
  CHECK((!fd.valid() || WaitExited(fd, DeadlineIn(10s))));
  CtrOk(e.cd(), {"-n", ns, "tasks", "rm", id});
  absl::StatusOr<Result> gone = test_support::Run({"crun", "--root", root, "state", id});
  REQUIRE_OK(gone);
  CHECK(gone->exit_code != 0);  // crun delete ran
  CtrOk(e.cd(), {"-n", ns, "containers", "rm", id});
}

TEST_CASE("shim e2e: BinaryName from --runtime-config-path runs the container with crun",
          "[containerd][shim][e2e][crun]") {
  if (!test_support::FindInPath("crun", getenv("PATH") ? getenv("PATH") : "").ok()) {
    WARN("crun is not installed: skipped");
    return;
  }
  auto e = E2E::Start();
  const std::string ns = UniqueName("crun");
  const std::string rootfs = e->Rootfs();

  // containerd 2.x writes specs of OCI version 1.2+, which Debian's crun
  // (1.8) refuses with "unknown version specified": nothing but the refusal
  // can be checked there.
  const bool crun_refuses_spec = UnderTest().is_2x();
  SECTION("BinaryName = \"crun\"") {
    if (!CrunRefusesThisHost() && !crun_refuses_spec) {
      CheckLifecycleWithCrun(*e, ns, rootfs, "crun");
    } else {
      // crun cannot run containers here at all; its own refusal, passed
      // through by the shim, still shows that crun is what the shim ran.
      const std::string config = e->cd().dir() + "/crun.toml";
      REQUIRE_OK(test_support::WriteFile(config, "BinaryName = \"crun\"\n"));
      const std::string id = UniqueName("viacrun");
      absl::StatusOr<Result> r = e->cd().Ctr(RunArgs(
          ns, {"-d", "--runtime-config-path", config}, rootfs, id, {"sleep", "100000"}));
      REQUIRE_OK(r);
      INFO(*r);
      CHECK(r->exit_code != 0);
      CHECK((Contains(r->err, "cgroups in hybrid mode not supported") ||
             (crun_refuses_spec && Contains(r->err, "unknown version specified"))));
      CHECK(Contains(r->err, "crun"));
      CHECK_FALSE(ListTasks(e->cd(), ns).contains(id));
      WARN("crun refuses this host or this containerd's spec version; "
           "its lifecycle is checked through a wrapper where it can be");
    }
  }

  SECTION("BinaryName = a path: a crun wrapper that hides cgroup2 from crun") {
    // On a hybrid host crun works in a mount namespace without the unified
    // hierarchy (it then sees cgroup v1 only, as runc uses here).
    const std::string wrapper = e->cd().dir() + "/crun-v1";
    REQUIRE_OK(test_support::WriteFile(
        wrapper,
        "#!/bin/sh\n"
        "exec unshare -m sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"' "
        "crun \"$@\"\n",
        0755));
    if (crun_refuses_spec) {
      WARN("skipped: Debian's crun refuses the OCI spec version of " << UnderTest().Describe());
      return;
    }
    CheckLifecycleWithCrun(*e, ns, rootfs, wrapper);
  }

  // Without the option, the same shim uses runc.
  const std::string plain = UniqueName("viarunc");
  RunDetached(e->cd(), ns, rootfs, plain, {"sleep", "100000"});
  const std::string root = "/run/containerd/runc/" + ns;
  absl::StatusOr<Result> runc_plain = test_support::Run({"runc", "--root", root, "state", plain});
  REQUIRE_OK(runc_plain);
  INFO("runc state: " << *runc_plain);
  CHECK(runc_plain->exit_code == 0);
}

TEST_CASE("shim e2e: containerd restart finds the running tasks again, and exits meanwhile",
          "[containerd][shim][e2e][restart]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("restart");
  const std::string rootfs = e->Rootfs("rootfs-a");
  const std::string rootfs_b = e->Rootfs("rootfs-b");
  const std::string running = UniqueName("running");
  const std::string exiting = UniqueName("exiting");
  const pid_t pid = RunDetached(e->cd(), ns, rootfs, running, {"sleep", "100000"});
  const pid_t pid_b = RunDetached(
      e->cd(), ns, rootfs_b, exiting,
      {"sh", "-c", "while [ ! -e /tmp/go ]; do usleep 10000; done; exit 5"});
  const pid_t daemon = e->TheDaemon();
  base::UniqueFd fd_b = OpenPidfd(pid_b);
  REQUIRE(fd_b.valid());

  REQUIRE_OK(e->cd().StopDaemon());
  // While containerd is away, one container exits (and the shim stays).
  REQUIRE_OK(test_support::WriteFile(rootfs_b + "/tmp/go", "go"));
  REQUIRE(WaitExited(fd_b, DeadlineIn(10s)));
  REQUIRE_OK(e->cd().StartDaemon());

  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks) << "containerd log tail:\n"
                        << e->cd().Log().substr(e->cd().Log().size() > 6000
                                                     ? e->cd().Log().size() - 6000
                                                     : 0)
                        << "\nshim log:\n"
                        << e->ShimLog());
  CHECK(tasks.contains(running));
  CHECK(tasks[running].status == "RUNNING");
  CHECK(tasks[running].pid == pid);
  CHECK(Alive(pid));
  CHECK(e->daemons() == std::vector<pid_t>{daemon});
  if (UnderTest().is_2x() || UnderTest().minor >= 7) {
    // 1.7's and 2.x's reload call Pids per bundle and delete a (non-sandbox)
    // task that has none ("cleaning leaked shim process"), as they do
    // runc-v2's, whose Pids of a stopped container is empty too.
    CHECK_FALSE(tasks.contains(exiting));
    return;
  }
  CHECK(tasks.contains(exiting));
  CHECK(tasks[exiting].status == "STOPPED");
  CHECK(e->daemons() == std::vector<pid_t>{daemon});
  // ctr 1.6's `task rm` reports the exit status that our Delete returned as
  // a warning ("exit with non-zero exit code 5") and itself exits 0.
  absl::StatusOr<Result> rm = e->cd().Ctr({"-n", ns, "tasks", "rm", exiting});
  REQUIRE_OK(rm);
  INFO(*rm);
  CHECK(rm->exit_code == 0);
  CHECK_THAT(rm->err, Catch::Contains("exit code 5"));
}

TEST_CASE("shim e2e: bad input gets a clear error and other containers keep running",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("bad");
  const std::string rootfs = e->Rootfs();
  const std::string survivor = UniqueName("survivor");
  const pid_t pid = RunDetached(e->cd(), ns, rootfs, survivor, {"sleep", "100000"});
  const pid_t daemon = e->TheDaemon();
  auto client = e->ShimClient();

  SECTION("an id with a path in it: ctr refuses it, the shim's Create says InvalidArgument") {
    absl::StatusOr<Result> r =
        e->cd().Ctr(RunArgs(ns, {"-d"}, rootfs, "../x", {"sleep", "100000"}));
    REQUIRE_OK(r);
    INFO(*r);
    CHECK(r->exit_code != 0);

    task::CreateTaskRequest create;
    create.set_id("../x");
    create.set_bundle(e->Bundle(ns, survivor));  // a real bundle: only the id is wrong
    absl::StatusOr<task::CreateTaskResponse> resp =
        client->Call<task::CreateTaskResponse>(kTaskService, "Create", create, CallIn(ns));
    INFO(resp.status().ToString());
    CHECK(absl::IsInvalidArgument(resp.status()));
    CHECK(Contains(base::ToStd(resp.status().message()), "../x"));
    CHECK_FALSE(PathExists(e->instance().state + "/x.pb"));
    CHECK_FALSE(PathExists(e->instance().state + "/" + ns + "/../x.pb"));
  }

  SECTION("a missing bundle: NotFound naming the path") {
    const std::string bundle = e->cd().dir() + "/" + UniqueName("no-such-bundle");
    task::CreateTaskRequest create;
    create.set_id(UniqueName("nobundle"));
    create.set_bundle(bundle);
    absl::StatusOr<task::CreateTaskResponse> resp =
        client->Call<task::CreateTaskResponse>(kTaskService, "Create", create, CallIn(ns));
    INFO(resp.status().ToString());
    CHECK(absl::IsNotFound(resp.status()));
    CHECK(Contains(base::ToStd(resp.status().message()), bundle));
    CHECK_FALSE(PathExists(e->instance().Record(ns, create.id())));
  }

  SECTION("a command that is not in the rootfs: ctr run fails naming it") {
    const std::string id = UniqueName("nocmd");
    const std::string cmd = "nosuchcmd-" + UniqueName("x");
    absl::StatusOr<Result> r = e->cd().Ctr(RunArgs(ns, {"--rm"}, rootfs, id, {cmd}));
    REQUIRE_OK(r);
    INFO(*r << "\nshim log:\n" << e->ShimLog());
    CHECK(r->exit_code != 0);
    CHECK(Contains(r->out + r->err, cmd));
    std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
    INFO(TasksText(tasks));
    CHECK_FALSE(tasks.contains(id));
    CHECK_FALSE(PathExists(e->instance().Record(ns, id)));
    // The shim does not keep the failed container: its State says NotFound.
    task::StateRequest state;
    state.set_id(id);
    CHECK(absl::IsNotFound(
        client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(ns)).status()));
  }

  SECTION("Kill of an unknown id: NotFound") {
    task::KillRequest kill;
    kill.set_id(UniqueName("unknown"));
    kill.set_signal(SIGKILL);
    absl::StatusOr<google::protobuf::Empty> resp =
        client->Call<google::protobuf::Empty>(kTaskService, "Kill", kill, CallIn(ns));
    INFO(resp.status().ToString());
    CHECK(absl::IsNotFound(resp.status()));
    CHECK(Contains(base::ToStd(resp.status().message()), kill.id()));
    // The survivor's id in another namespace is unknown there too.
    kill.set_id(survivor);
    kill.set_signal(SIGKILL);
    resp = client->Call<google::protobuf::Empty>(kTaskService, "Kill", kill,
                                                 CallIn(UniqueName("otherns")));
    CHECK(absl::IsNotFound(resp.status()));
  }

  // Whatever was tried, the running container and the same daemon are still there.
  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  INFO(TasksText(tasks) << "\nshim log:\n" << e->ShimLog());
  REQUIRE(tasks.contains(survivor));
  CHECK(tasks[survivor].status == "RUNNING");
  CHECK(tasks[survivor].pid == pid);
  CheckIsContainerProcess(pid, "sleep");
  CHECK(e->daemons() == std::vector<pid_t>{daemon});
}

TEST_CASE("shim e2e: after the last container is deleted nothing of the shim remains",
          "[containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("gone");
  const std::string ns2 = UniqueName("gone2");
  const std::string rootfs = e->Rootfs();
  std::vector<std::pair<std::string, std::string>> containers = {
      {ns, UniqueName("a")}, {ns, UniqueName("b")}, {ns2, UniqueName("c")}};
  for (const auto& [space, id] : containers) RunDetached(e->cd(), space, rootfs, id, {"sleep", "100000"});
  const pid_t daemon = e->TheDaemon();
  base::UniqueFd daemon_fd = OpenPidfd(daemon);
  REQUIRE(daemon_fd.valid());
  std::vector<base::UniqueFd> keeper_fds;
  for (pid_t k : e->processes().keepers) keeper_fds.push_back(OpenPidfd(k));
  const Instance& inst = e->instance();
  // While it serves: the socket, the log, a record per container and the pins.
  CHECK(PathExists(inst.socket));
  CHECK(PathExists(inst.log));
  for (const auto& [space, id] : containers) CHECK(PathExists(inst.Record(space, id)));
  CHECK(PathExists(inst.pins));

  // Delete them one by one: the daemon must stay while any is left.
  for (size_t i = 0; i < containers.size(); ++i) {
    const auto& [space, id] = containers[i];
    CtrOk(e->cd(), {"-n", space, "tasks", "kill", "-s", "SIGKILL", id});
    CtrOk(e->cd(), {"-n", space, "tasks", "rm", "-f", id});
    CtrOk(e->cd(), {"-n", space, "containers", "rm", id});
    if (i + 1 < containers.size()) {
      // Wait out the daemon's idle linger (~1 s) to prove it does not leave
      // while containers remain.
      CHECK_FALSE(WaitExited(daemon_fd, DeadlineIn(1500ms)));
      // The shim forgot the deleted one (its record may stay a while as a
      // tombstone, but the Task API no longer knows it).
      auto client = e->ShimClient();
      task::StateRequest state;
      state.set_id(id);
      absl::StatusOr<task::StateResponse> st =
          client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(space));
      INFO("State of deleted " << id << ": " << st.status().ToString());
      CHECK(absl::IsNotFound(st.status()));
      // The next container is still served.
      CHECK(ListTasks(e->cd(), containers[i + 1].first)[containers[i + 1].second].status ==
            "RUNNING");
    }
  }
  {
    Deadline deadline = DeadlineIn(15s);
    bool exited = WaitExited(daemon_fd, deadline);
    for (const base::UniqueFd& k : keeper_fds) exited = WaitExited(k, deadline) && exited;
    INFO("shim log:\n" << e->ShimLog());
    REQUIRE(exited);
  }
  CHECK(e->processes().empty());
  CHECK_FALSE(PathExists(inst.socket));
  CHECK_FALSE(PathExists(inst.state));
  CHECK_FALSE(PathExists(inst.dir));
  CHECK_FALSE(PathExists(inst.pins));
  for (const auto& [space, id] : containers) {
    CHECK_FALSE(PathExists(e->Bundle(space, id)));
    CHECK_FALSE(PathExists("/run/containerd/runc/" + space + "/" + id));
  }
  absl::StatusOr<std::vector<std::string>> mounts = test_support::MountsUnder(e->cd().dir());
  REQUIRE_OK(mounts);
  CHECK(mounts->empty());
  // Nothing that still has the instance's files open or is in its dirs.
  CHECK(test_support::ProcessesReferencing(inst.dir).empty());

  // And a new container brings a new daemon up.
  const std::string again = UniqueName("again");
  RunDetached(e->cd(), ns, rootfs, again, {"sleep", "100000"});
  const pid_t daemon2 = e->TheDaemon();
  CHECK(daemon2 != daemon);
  CHECK(PathExists(inst.socket));
}

TEST_CASE("shim e2e: the launcher answers `start` alone while the shim serves the namespace",
          "[containerd][shim][e2e][start]") {
  // containerd execs containerd-shim-embed-v1 once per task. When the shim
  // already serves the namespace, the launcher must answer by itself (one
  // connect, no RPC, no server binary). A copy of the launcher with no
  // server binary next to it proves it: handing off would fail (exec).
  auto e = E2E::Start();
  const std::string ns = UniqueName("launch");
  const std::string id = UniqueName("running");
  RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});
  absl::StatusOr<std::string> served = test_support::ReadFile(e->Bundle(ns, id) + "/address");
  REQUIRE_OK(served);

  test_support::ScopedTempDir dir("embed-launcher-", "/tmp");
  REQUIRE(dir.ok());
  const std::string launcher = dir.Sub("containerd-shim-embed-v1");
  REQUIRE_OK(test_support::Run({"cp", ShimBinary(), launcher}));
  REQUIRE(mkdir(dir.Sub("bundle").c_str(), 0700) == 0);
  // What containerd passes: its own executable, which tells 1.x from 2.x.
  const std::string containerd =
      UnderTest().bin_dir.empty() ? "/usr/bin/containerd" : UnderTest().containerd;
  auto start = [&](const std::string& space) {
    SpawnOptions o;
    o.argv = {launcher, "-namespace", space, "-address", e->address(), "-publish-binary",
              containerd, "-id", UniqueName("next"), "start"};
    o.cwd = dir.Sub("bundle");
    absl::StatusOr<Result> r = test_support::Run(std::move(o), 30s);
    REQUIRE_OK(r);
    return *r;
  };
  Result r = start(ns);
  INFO("start: " << r.ToString());
  CHECK(r.exit_code == 0);
  // The namespace's socket, and nothing else on stdout; for containerd 2.x
  // in the bootstrap JSON that announces containerd.task.v3.Task.
  CHECK(r.out == (UnderTest().is_2x()
                      ? "{\"version\":3,\"address\":\"" + *served + "\",\"protocol\":\"ttrpc\"}"
                      : *served));
  absl::StatusOr<std::string> written = test_support::ReadFile(dir.Sub("bundle/address"));
  REQUIRE_OK(written);
  CHECK(*written == *served);

  // A namespace the shim does not serve yet needs the server binary: the
  // launcher hands off, and says clearly that it cannot.
  Result other = start(UniqueName("newns"));
  INFO("start in a new namespace: " << other.ToString());
  CHECK(other.exit_code == 127);
  CHECK(Contains(other.err, "containerd-shim-embed-v1-server"));
}

TEST_CASE("shim e2e: ctr task pause and resume freeze and thaw the container",
          "[containerd][shim][e2e][pause]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("pause");
  const std::string id = UniqueName("frozen");
  RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});
  // runc reads the cgroup freezer: it says what the kernel did.
  auto runc_status = [&] {
    absl::StatusOr<Result> st =
        test_support::Run({"runc", "--root", "/run/containerd/runc/" + ns, "state", id});
    REQUIRE_OK(st);
    INFO(*st);
    REQUIRE(st->exit_code == 0);
    return st->out;
  };
  INFO("shim log:\n" << e->ShimLog());

  CtrOk(e->cd(), {"-n", ns, "tasks", "pause", id});
  CHECK(ListTasks(e->cd(), ns)[id].status == "PAUSED");
  CHECK(Contains(runc_status(), "\"status\": \"paused\""));

  // Illegal transitions get a clear error and change nothing.
  absl::StatusOr<Result> again = e->cd().Ctr({"-n", ns, "tasks", "pause", id});
  REQUIRE_OK(again);
  CHECK(again->exit_code != 0);
  CHECK(Contains(again->err, "cannot pause a paused process"));
  absl::StatusOr<Result> rm = e->cd().Ctr({"-n", ns, "tasks", "rm", id});
  REQUIRE_OK(rm);
  CHECK(rm->exit_code != 0);
  CHECK(ListTasks(e->cd(), ns)[id].status == "PAUSED");

  CtrOk(e->cd(), {"-n", ns, "tasks", "resume", id});
  CHECK(ListTasks(e->cd(), ns)[id].status == "RUNNING");
  CHECK(Contains(runc_status(), "\"status\": \"running\""));
  absl::StatusOr<Result> resume_again = e->cd().Ctr({"-n", ns, "tasks", "resume", id});
  REQUIRE_OK(resume_again);
  CHECK(resume_again->exit_code != 0);
  CHECK(Contains(resume_again->err, "cannot resume a running process"));
}

TEST_CASE("shim e2e: ctr task metrics reads the container's own cgroup",
          "[containerd][shim][e2e][stats]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("metrics");
  const std::string id = UniqueName("measured");
  const pid_t pid = RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});
  // `ctr tasks metrics` prints "METRIC VALUE" rows (v1 or v2 names).
  auto metrics = [&] {
    std::map<std::string, std::string> rows;
    for (const std::string& line :
         test_support::SplitLines(CtrOk(e->cd(), {"-n", ns, "tasks", "metrics", id}))) {
      std::vector<std::string> f = test_support::Split(line, ' ');
      if (f.size() >= 2) rows[f[0]] = f[1];
    }
    return rows;
  };
  std::map<std::string, std::string> rows = metrics();
  INFO("shim log:\n" << e->ShimLog());
  CHECK(rows["pids.current"] == "1");  // the container's init, alone
  const bool v1 = rows.contains("memory.usage_in_bytes");
  const std::string usage = rows[v1 ? "memory.usage_in_bytes" : "memory.usage"];
  CHECK(!usage.empty());
  CHECK(std::stoull(usage.empty() ? "0" : usage) > 0);
  // The same number as the container's cgroup says, not the host's or ours.
  if (v1) {
    std::string memory_cgroup;
    absl::StatusOr<std::string> cgroups = test_support::ReadFile(fmt::format("/proc/{}/cgroup", pid));
    REQUIRE_OK(cgroups);
    for (const std::string& line : test_support::SplitLines(*cgroups)) {
      std::vector<std::string> f = test_support::Split(line, ':');
      if (f.size() == 3 && f[1] == "memory") memory_cgroup = f[2];
    }
    REQUIRE(!memory_cgroup.empty());
    CHECK(Contains(memory_cgroup, id));
    absl::StatusOr<std::string> limit =
        test_support::ReadFile("/sys/fs/cgroup/memory" + memory_cgroup + "/memory.limit_in_bytes");
    REQUIRE_OK(limit);
    CHECK(rows["memory.limit_in_bytes"] + "\n" == *limit);
  }

  // Once the container has exited there is no cgroup: a clear error (which
  // containerd logs; ctr only says it received no metrics).
  base::UniqueFd pidfd = OpenPidfd(pid);
  REQUIRE(pidfd.valid());
  CtrOk(e->cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", id});
  REQUIRE(WaitExited(pidfd, DeadlineIn(10s)));
  // The shim reports the exit from its ring buffer, a moment after the pidfd.
  for (int i = 0; i < 100 && ListTasks(e->cd(), ns)[id].status != "STOPPED"; ++i) {
  }
  REQUIRE(ListTasks(e->cd(), ns)[id].status == "STOPPED");
  absl::StatusOr<Result> after = e->cd().Ctr({"-n", ns, "tasks", "metrics", id});
  REQUIRE_OK(after);
  INFO("metrics after the exit: " << after->ToString());
  CHECK(after->exit_code != 0);
  CHECK(Contains(after->err, "no metrics received"));
}

TEST_CASE("shim e2e: a daemon that no Create reaches leaves by itself, and leaves nothing",
          "[containerd][shim][e2e][start]") {
  // `start` spawns the daemon, but the task never comes (containerd died in
  // between, or someone ran `start` by hand). Without Shutdown the daemon
  // must still go: after a minute, here after 300 ms.
  auto e = E2E::Start();
  REQUIRE(e->processes().empty());
  test_support::ScopedTempDir bundle("embed-unused-", "/tmp");
  REQUIRE(bundle.ok());
  SpawnOptions o;
  o.argv = {ShimBinary(), "-namespace", UniqueName("unused"), "-address", e->address(),
            "-publish-binary", "/usr/bin/containerd", "-id", UniqueName("never"), "start"};
  o.cwd = bundle.path();
  o.env = {{"EMBED_SHIM_UNUSED_LIMIT_MS", "300"}};
  absl::StatusOr<Result> r = test_support::Run(std::move(o), 60s);
  REQUIRE_OK(r);
  INFO("start: " << r->ToString() << "\nshim log:\n" << e->ShimLog());
  REQUIRE(r->exit_code == 0);
  ShimProcesses procs = e->processes();
  REQUIRE(procs.size() == 2);  // a server and its keeper
  for (pid_t pid : procs.all()) {
    base::UniqueFd fd = OpenPidfd(pid);
    REQUIRE(fd.valid());
    CHECK(WaitExited(fd, DeadlineIn(30s)));
  }
  CHECK_FALSE(PathExists(e->instance().dir));
  CHECK_FALSE(PathExists(e->instance().pins));
}

TEST_CASE("shim e2e: `delete` by hand after the daemon was SIGKILLed reports the real exit status",
          "[containerd][shim][e2e][delete]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("del");
  const std::string rootfs = e->Rootfs("rootfs-del");
  const std::string other_rootfs = e->Rootfs("rootfs-other");
  const std::string id = UniqueName("exits42");
  const std::string other = UniqueName("other");
  const std::string go = rootfs + "/tmp/go";
  // The container is the workload here: it may poll for the file the test creates.
  const pid_t pid = RunDetached(
      e->cd(), ns, rootfs, id,
      {"sh", "-c", "while [ ! -e /tmp/go ]; do usleep 10000; done; exit 42"});
  const pid_t other_pid = RunDetached(e->cd(), ns, other_rootfs, other, {"sleep", "100000"});
  base::UniqueFd pidfd = OpenPidfd(pid);
  REQUIRE(pidfd.valid());
  const std::string bundle = e->Bundle(ns, id);
  REQUIRE(PathExists(bundle + "/config.json"));
  REQUIRE(PathExists(e->instance().Record(ns, id)));

  // containerd away first: it would otherwise run `delete` itself as soon as
  // the shim's connection drops, racing with ours.
  REQUIRE_OK(e->cd().StopDaemon());
  // The whole shim dies: the server and the keeper that would restart it
  // (the keeper first).
  (void)e->TheDaemon();
  ShimProcesses procs = e->processes();
  INFO("shim processes: " << procs.ToString());
  std::vector<pid_t> victims = procs.keepers;
  victims.insert(victims.end(), procs.servers.begin(), procs.servers.end());
  for (pid_t victim : victims) {
    base::UniqueFd fd = OpenPidfd(victim);
    REQUIRE(fd.valid());
    REQUIRE(SendSignal(fd, SIGKILL));
    REQUIRE(WaitExited(fd, DeadlineIn(10s)));
  }
  REQUIRE(e->processes().empty());

  // The container exits while no daemon runs.
  const absl::Time before_exit = absl::Now();
  REQUIRE_OK(test_support::WriteFile(go, "go"));
  REQUIRE(WaitExited(pidfd, DeadlineIn(10s)));
  CHECK(Alive(other_pid));

  auto run_delete = [&](const std::string& cid) {
    SpawnOptions o;
    o.argv = {ShimBinary(), "-namespace", ns, "-address", e->address(), "-publish-binary",
              "/usr/bin/containerd", "-id", cid, "-bundle", e->Bundle(ns, cid), "delete"};
    o.cwd = e->Bundle(ns, cid);
    absl::StatusOr<Result> r = test_support::Run(std::move(o), 60s);
    REQUIRE_OK(r);
    return *r;
  };
  Result r = run_delete(id);
  INFO("delete: exit " << r.exit_code << " stderr '" << r.err << "'\nshim log:\n"
                       << e->ShimLog());
  REQUIRE(r.exit_code == 0);
  task::DeleteResponse resp;
  REQUIRE(resp.ParseFromString(r.out));
  CHECK(resp.exit_status() == 42);
  CHECK(static_cast<pid_t>(resp.pid()) == pid);
  absl::Time exited_at = absl::FromUnixSeconds(resp.exited_at().seconds()) +
                         absl::Nanoseconds(resp.exited_at().nanos());
  CHECK(exited_at >= before_exit - absl::Seconds(1));
  CHECK(exited_at <= absl::Now() + absl::Seconds(1));
  // It ran `runc delete`, and touched no other container.
  const std::string runc_root = "/run/containerd/runc/" + ns;
  auto runc_knows = [&](const std::string& cid) {
    absl::StatusOr<Result> st = test_support::Run({"runc", "--root", runc_root, "state", cid});
    REQUIRE_OK(st);
    return st->exit_code == 0;
  };
  CHECK_FALSE(runc_knows(id));
  CHECK(Alive(other_pid));
  CHECK(runc_knows(other));
  CHECK(e->processes().empty());  // and it started no shim

  // Again (containerd runs it again after a restart): still exit 0 and a
  // decodable response.
  Result again = run_delete(id);
  INFO("second delete: stderr '" << again.err << "'");
  CHECK(again.exit_code == 0);
  task::DeleteResponse resp2;
  CHECK(resp2.ParseFromString(again.out));

  // A container still running when delete runs by hand is killed: 137.
  base::UniqueFd other_fd = OpenPidfd(other_pid);
  Result r_other = run_delete(other);
  INFO("delete other: stderr '" << r_other.err << "'");
  REQUIRE(r_other.exit_code == 0);
  task::DeleteResponse resp_other;
  REQUIRE(resp_other.ParseFromString(r_other.out));
  CHECK(resp_other.exit_status() == 137);
  CHECK(static_cast<pid_t>(resp_other.pid()) == other_pid);
  CHECK(WaitExited(other_fd, DeadlineIn(10s)));
  CHECK_FALSE(runc_knows(other));

  // containerd comes back to clean up; the tasks are gone.
  REQUIRE_OK(e->cd().StartDaemon());
  CHECK(ListTasks(e->cd(), ns).empty());
}

TEST_CASE("shim e2e: RSS and PSS of the shim daemon with 50 containers",
          "[.measure][containerd][shim][e2e]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("measure");
  const std::string rootfs = e->Rootfs();
  // The shim is its server plus, where there is one, its keeper.
  auto report = [&](size_t containers, double start_s) {
    (void)e->TheDaemon();
    ShimProcesses procs = e->processes();
    int64_t total_rss = 0, total_pss = 0;
    auto one = [&](const char* role, pid_t pid) {
      int64_t rss = SmapsRollupKb(pid, "Rss");
      int64_t pss = SmapsRollupKb(pid, "Pss");
      int64_t anon = SmapsRollupKb(pid, "Anonymous");
      int64_t priv = SmapsRollupKb(pid, "Private_Clean") + SmapsRollupKb(pid, "Private_Dirty");
      fmt::print("  {} pid {}: Rss {} kB ({:.2f} MiB), Pss {} kB ({:.2f} MiB), Anonymous {} kB, "
                 "Private {} kB\n",
                 role, pid, rss, rss / 1024.0, pss, pss / 1024.0, anon, priv);
      CHECK(rss > 0);
      CHECK(pss > 0);
      total_rss += rss;
      total_pss += pss;
    };
    fmt::print("shim serving {} containers (started in {:.2f} s):\n", containers, start_s);
    for (pid_t p : procs.servers) one("server", p);
    for (pid_t p : procs.keepers) one("keeper", p);
    fmt::print("  total: Rss {:.2f} MiB, Pss {:.2f} MiB\n", total_rss / 1024.0,
               total_pss / 1024.0);
    return total_pss;
  };

  auto start = Clock::now();
  RunDetached(e->cd(), ns, rootfs, UniqueName("m0"), {"sleep", "100000"});
  const int64_t pss_one = report(1, std::chrono::duration<double>(Clock::now() - start).count());

  constexpr int kContainers = 50;
  std::vector<Subprocess> runs;
  start = Clock::now();
  // 49 more, 7 ctr processes at a time (2 cores).
  for (int i = 1; i < kContainers; ++i) {
    absl::StatusOr<Subprocess> p = e->cd().RunCtrAsync(
        RunArgs(ns, {"-d"}, rootfs, UniqueName(fmt::format("m{}", i)), {"sleep", "100000"}));
    REQUIRE_OK(p);
    runs.push_back(std::move(*p));
    if (runs.size() == 7 || i + 1 == kContainers) {
      for (Subprocess& run : runs) {
        absl::StatusOr<test_support::ExitStatus> st = run.Wait(DeadlineIn(120s));
        INFO(run.err());
        REQUIRE_OK(st);
        REQUIRE(st->success());
      }
      runs.clear();
    }
  }
  double start_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::map<std::string, Task> tasks = ListTasks(e->cd(), ns);
  REQUIRE(tasks.size() == kContainers);
  for (const auto& [id, t] : tasks) REQUIRE(t.status == "RUNNING");
  const int64_t pss_all = report(kContainers, start_s);
  fmt::print("  each container beyond the first adds {:.1f} kB of Pss\n",
             static_cast<double>(pss_all - pss_one) / (kContainers - 1));
}
