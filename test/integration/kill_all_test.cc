// Nothing is left behind when an init dies. A container without a pid
// namespace of its own (`ctr run --with-ns pid:/proc/1/ns/pid`) leaves its
// init's children running when the init exits: the kernel kills the rest of
// a namespace only when that namespace's init dies. So, as runc-v2 does, the
// shim runs `runc kill --all <id> KILL` before it publishes the init's exit,
// also when the exit happened while no server ran. A container with a pid
// namespace of its own is the comparison: there the kernel does it.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "test/integration/exec_util.h"
#include "test/integration/survival_util.h"
#include "test/support/status_matchers.h"

namespace {

using namespace survival;

// The host's pid namespace, by way of our own process: some sandboxes (this
// project's VM among them) refuse to let anyone open /proc/1/ns/pid.
std::string HostPidNs() { return fmt::format("pid:/proc/{}/ns/pid", getpid()); }

// A container whose init (`sleep`) has a background `sleep 1000` child in its
// cgroup; returns {init, child} as host pids.
struct Family {
  pid_t init = 0, child = 0;
};
Family RunFamily(PrivateContainerd& cd, const std::string& ns, const std::string& rootfs,
                 const std::string& id, bool host_pid) {
  std::vector<std::string> flags;
  if (host_pid) flags = {"--with-ns", HostPidNs()};
  Family f;
  f.init = RunDetached(cd, ns, rootfs, id, {"sh", "-c", "sleep 1000 & exec sleep 1001"}, flags);
  // `ctr task ps`: the container's cgroup. The shell forks before its exec.
  const Deadline deadline = DeadlineIn(20s);
  std::vector<pid_t> pids;
  while (Clock::now() < deadline) {
    pids = exec_e2e::TaskPids(cd, ns, id);
    if (pids.size() == 2 && CmdlineText(f.init) == "sleep 1001") break;
  }
  INFO("pids in the container: " << pids.size() << ", init: " << CmdlineText(f.init));
  REQUIRE(pids.size() == 2);
  f.child = pids[0] == f.init ? pids[1] : pids[0];
  REQUIRE(CmdlineText(f.child) == "sleep 1000");
  return f;
}

// Kills only the init (no --all), waits for its TaskExit, and checks that
// the child is gone by then.
void KillInitExpectChildGone(Survival& s, EventLog& events, const std::string& ns,
                             const std::string& id, const Family& f) {
  base::UniqueFd child = OpenPidfd(f.child);
  REQUIRE(child.valid());
  CtrOk(s.cd(), {"-n", ns, "task", "kill", "-s", "SIGKILL", id});
  REQUIRE_OK(events.WaitFor(fmt::format("/tasks/exit {{\"container_id\":\"{}\"", id),
                            DeadlineIn(30s)));
  // SIGKILLed before the exit was published; it dies as soon as it runs.
  INFO("child " << f.child << " already gone when TaskExit came: " << Exited(child) << "\n"
                << s.Logs());
  CHECK(WaitExited(child, DeadlineIn(5s)));
  CHECK(ListTasks(s.cd(), ns)[id].status == "STOPPED");
}

TEST_CASE("kill all: the host-pid init's exit takes its background child along",
          "[containerd][shim][kill-all]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("killall");
  const std::string id = UniqueName("hostpid");
  EventLog events(s->cd());
  const Family f = RunFamily(s->cd(), ns, s->Rootfs(), id, /*host_pid=*/true);
  KillInitExpectChildGone(*s, events, ns, id, f);
  CHECK(Contains(s->ShimLog(), "killing the rest of its cgroup"));
  CHECK(RemoveTaskStatus(s->cd(), ns, id) == 137);
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("kill all: with a pid namespace of its own the kernel does it (comparison)",
          "[containerd][shim][kill-all]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("killall");
  const std::string id = UniqueName("ownpid");
  EventLog events(s->cd());
  const Family f = RunFamily(s->cd(), ns, s->Rootfs(), id, /*host_pid=*/false);
  KillInitExpectChildGone(*s, events, ns, id, f);
  CHECK_FALSE(Contains(s->ShimLog(), "killing the rest of its cgroup"));
  CHECK(RemoveTaskStatus(s->cd(), ns, id) == 137);
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("kill all: a host-pid init that exits while no server runs is followed at recovery",
          "[containerd][shim][kill-all][survival]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("killall");
  const std::string id = UniqueName("hostpid-down");
  EventLog events(s->cd());
  const Family f = RunFamily(s->cd(), ns, s->Rootfs(), id, /*host_pid=*/true);
  base::UniqueFd init = OpenPidfd(f.init);
  base::UniqueFd child = OpenPidfd(f.child);
  REQUIRE(init.valid());
  REQUIRE(child.valid());

  // The keeper stopped cannot start a server; then the server dies.
  const pid_t server = s->TheServer();
  base::UniqueFd keeper_fd = OpenPidfd(s->TheKeeper());
  REQUIRE(keeper_fd.valid());
  REQUIRE(SendSignal(keeper_fd, SIGSTOP));
  struct Continue {  // whatever happens below
    const base::UniqueFd& fd;
    ~Continue() { SendSignal(fd, SIGCONT); }
  } cont{keeper_fd};
  s->KillServer(server);

  // The init dies while no server runs; its child lives on meanwhile.
  REQUIRE(SendSignal(init, SIGKILL));
  REQUIRE(WaitExited(init, DeadlineIn(30s)));
  CHECK_FALSE(Exited(child));

  const size_t offset = FileSize(s->instance().log);
  REQUIRE(SendSignal(keeper_fd, SIGCONT));
  {
    absl::StatusOr<pid_t> next = WaitServing(s->instance().log, offset, server, DeadlineIn(30s));
    INFO(s->Logs());
    REQUIRE_OK(next);
  }
  REQUIRE_OK(events.WaitFor(fmt::format("/tasks/exit {{\"container_id\":\"{}\"", id),
                            DeadlineIn(30s)));
  INFO("child already gone when TaskExit came: " << Exited(child) << "\n" << s->Logs());
  CHECK(WaitExited(child, DeadlineIn(5s)));
  CHECK(RemoveTaskStatus(s->cd(), ns, id) == 137);
  test_support::RemoveRuncNamespaceRoot(ns);
}

}  // namespace
