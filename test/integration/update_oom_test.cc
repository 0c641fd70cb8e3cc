// Update and OOM events end to end, on a private containerd 1.6 with real
// runc, each against io.containerd.embed.v1 and, where cheap, the same steps
// against io.containerd.runc.v2 on the same daemon.
//
// Update: no ctr has `task update`, so containerd's gRPC Tasks.Update is
// called through test/support/containerd_api.py (python3-grpcio; skipped
// with the reason when it is missing). The memory limit is read back from
// the container's v1 memory cgroup.
//
// OOM: a container with a 32 MiB limit runs `tail /dev/zero` (no newline
// ever comes, so busybox tail keeps all it read) as its init, which the
// kernel kills: exactly one /tasks/oom, before its /tasks/exit with 137.
// Then the same while no server runs: the keeper is stopped, the server
// SIGKILLed, the OOM triggered through a fifo in the rootfs, and only then
// the keeper let go, so the new server finds the kill counted and the exit
// in the pinned map.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "test/integration/survival_util.h"

namespace {

using namespace survival;
using test_support::UniqueName;

constexpr char kRuncV2[] = "io.containerd.runc.v2";
constexpr char kPython[] = "/usr/bin/python3";  // Debian's, where python3-grpcio is
constexpr uint64_t kUnlimited = 9223372036854771712ULL;  // v1's "no limit"

// runc removes a container's cgroup, not the /<ns> one above it (ctr's
// cgroupsPath is /<ns>/<id>), nor its per-namespace root. Declared before
// the fixture, so it runs after the fixture's teardown, on failure too.
struct NamespaceCleanup {
  std::vector<std::string> namespaces;
  ~NamespaceCleanup() {
    for (const std::string& ns : namespaces) {
      for (const auto& h : std::filesystem::directory_iterator("/sys/fs/cgroup")) {
        (void)rmdir((h.path() / ns).c_str());  // unified/<ns> too: unified is one of them
      }
      test_support::RemoveRuncNamespaceRoot(ns);
    }
  }
  const std::string& Add(std::string ns) { return namespaces.emplace_back(std::move(ns)); }
};

// `ctr -n ns run -d --runtime R [flags] --rootfs ROOTFS ID CMD...`; the task's pid.
pid_t RunWith(PrivateContainerd& cd, const std::string& runtime, const std::string& ns,
              const std::string& rootfs, const std::string& id, std::vector<std::string> cmd,
              std::vector<std::string> flags = {}) {
  std::vector<std::string> a = {"-n", ns, "run", "-d", "--runtime", runtime, "--env", "PATH=/bin"};
  a.insert(a.end(), flags.begin(), flags.end());
  a.insert(a.end(), {"--rootfs", rootfs, id});
  a.insert(a.end(), cmd.begin(), cmd.end());
  CtrOk(cd, a);
  return RequireRunning(cd, ns, id);
}

// The v1 memory cgroup directory of pid, "" if none.
std::string MemoryCgroup(pid_t pid) {
  auto text = test_support::ReadFile(fmt::format("/proc/{}/cgroup", pid));
  if (!text.ok()) return "";
  for (const std::string& line : test_support::SplitLines(*text)) {
    std::vector<std::string> f = test_support::Split(line, ':');
    if (f.size() == 3 && f[1] == "memory") return "/sys/fs/cgroup/memory" + f[2];
  }
  return "";
}

uint64_t MemoryLimit(const std::string& cgroup) {
  auto text = test_support::ReadFile(cgroup + "/memory.limit_in_bytes");
  REQUIRE_OK(text);
  return std::strtoull(text->c_str(), nullptr, 10);
}

// Skips the case unless python3-grpcio and python3-grpc-tools are there.
bool HaveGrpcPython() {
  absl::StatusOr<Result> r = test_support::Run({kPython, "-c", "import grpc, grpc_tools"});
  return r.ok() && r->exit_code == 0;
}

// containerd's Tasks.Update of task `id`; the script's result.
Result Update(PrivateContainerd& cd, const std::string& ns, const std::string& id,
              const std::string& resources) {
  absl::StatusOr<Result> r = test_support::Run(
      {kPython, CONTAINERD_API_PY, "update", cd.address(), ns, id, resources}, 120s);
  REQUIRE_OK(r);
  return *r;
}

// Waits until the task is gone from `ctr task ls` after `ctr task rm`.
void RemoveTask(PrivateContainerd& cd, const std::string& ns, const std::string& id) {
  CtrOk(cd, {"-n", ns, "tasks", "rm", "-f", id});
  CtrOk(cd, {"-n", ns, "containers", "rm", id});
}

// What `ctr events` showed for one container: its /tasks/* topics in order.
std::vector<std::string> TopicsOf(const EventLog& events, const std::string& id) {
  std::vector<std::string> out;
  for (const std::string& line : test_support::SplitLines(events.Text())) {
    if (!Contains(line, "\"container_id\":\"" + id + "\"")) continue;
    for (std::string_view t : {"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit",
                               "/tasks/delete"})
      if (Contains(line, fmt::format(" {} ", t))) out.emplace_back(t);
  }
  return out;
}

long Count(const std::vector<std::string>& v, std::string_view what) {
  return std::count(v.begin(), v.end(), what);
}

// Update against `runtime`: the limit changes; runc's refusal and a stopped
// task give clear errors and leave the task as it was.
void CheckUpdate(Survival& s, NamespaceCleanup& cleanup, const std::string& runtime) {
  PrivateContainerd& cd = s.cd();
  const std::string ns = cleanup.Add(UniqueName("upd"));
  const std::string id = UniqueName("upd");
  const std::string rootfs = s.Rootfs("rootfs-" + id);
  pid_t pid = RunWith(cd, runtime, ns, rootfs, id, {"sleep", "600"});
  const std::string cgroup = MemoryCgroup(pid);
  INFO(runtime << " pid " << pid << " cgroup " << cgroup);
  REQUIRE_FALSE(cgroup.empty());
  CHECK(MemoryLimit(cgroup) == kUnlimited);

  Result ok = Update(cd, ns, id, R"({"memory":{"limit":67108864}})");
  INFO(ok);
  REQUIRE(ok.exit_code == 0);
  CHECK(MemoryLimit(cgroup) == 64u << 20);
  // The same again (what a replay does): harmless.
  REQUIRE(Update(cd, ns, id, R"({"memory":{"limit":67108864}})").exit_code == 0);

  // A negative CPU share is no uint64: refused, the task unharmed.
  Result bad = Update(cd, ns, id, R"({"cpu":{"shares":-5}})");
  INFO(bad);
  CHECK(bad.exit_code != 0);
  CHECK(Contains(bad.err, "shares"));
  CHECK(MemoryLimit(cgroup) == 64u << 20);
  CHECK(RequireRunning(cd, ns, id) == pid);

  // A stopped task takes no update.
  EventLog events(cd);
  CtrOk(cd, {"-n", ns, "tasks", "kill", "-s", "KILL", id});
  REQUIRE_OK(events.WaitFor("\"container_id\":\"" + id + "\"", DeadlineIn(30s)));
  (void)WaitTasks(cd, ns, DeadlineIn(30s), [&](const auto& t) {
    return t.contains(id) && t.at(id).status == "STOPPED";
  });
  Result stopped = Update(cd, ns, id, R"({"memory":{"limit":33554432}})");
  INFO(stopped);
  CHECK(stopped.exit_code != 0);
  CHECK(Contains(stopped.err, "cannot update a stopped container"));
  RemoveTask(cd, ns, id);
}

// A 32 MiB container whose init outgrows it: TaskOOM(s) and TaskExit 137.
std::vector<std::string> RunIntoOom(Survival& s, NamespaceCleanup& cleanup,
                                    const std::string& runtime, const std::string& id) {
  PrivateContainerd& cd = s.cd();
  const std::string ns = cleanup.Add(UniqueName("oom"));
  const std::string rootfs = s.Rootfs("rootfs-" + id);
  EventLog events(cd);
  CtrOk(cd, {"-n", ns, "run", "-d", "--runtime", runtime, "--memory-limit", "33554432", "--env",
             "PATH=/bin", "--rootfs", rootfs, id, "tail", "/dev/zero"});
  REQUIRE_OK(events.WaitFor(" /tasks/exit ", DeadlineIn(60s)));
  RemoveTask(cd, ns, id);
  // Events come in order: any TaskOOM published before the delete is there.
  REQUIRE_OK(events.WaitFor(" /tasks/delete ", DeadlineIn(30s)));
  std::vector<EventLog::Exit> exits = events.ExitsOf(id);
  INFO(events.Text());
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].status == 137);
  return TopicsOf(events, id);
}

}  // namespace

TEST_CASE("update: Tasks.Update sets the container's cgroup; bad input errs, task unharmed",
          "[embed][update]") {
  if (!HaveGrpcPython()) {
    WARN("skipped: needs python3-grpcio and python3-grpc-tools (scripts/install-deps)");
    return;
  }
  NamespaceCleanup cleanup;
  auto s = Survival::Start();
  CheckUpdate(*s, cleanup, kRuntime);
}

TEST_CASE("update: the same steps on runc-v2", "[runc-v2][update]") {
  if (!HaveGrpcPython()) {
    WARN("skipped: needs python3-grpcio and python3-grpc-tools (scripts/install-deps)");
    return;
  }
  NamespaceCleanup cleanup;
  auto s = Survival::Start();
  CheckUpdate(*s, cleanup, kRuncV2);
}

TEST_CASE("oom: one TaskOOM per OOM kill, before TaskExit 137; runc-v2 alongside",
          "[embed][oom]") {
  NamespaceCleanup cleanup;
  auto s = Survival::Start();
  std::vector<std::string> embed = RunIntoOom(*s, cleanup, kRuntime, UniqueName("oom"));
  INFO("embed: " << fmt::format("{}", fmt::join(embed, " ")));
  CHECK(embed == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/oom",
                                          "/tasks/exit", "/tasks/delete"});
  // runc-v2 on the same daemon publishes at least one, as its watcher sees
  // notifications rather than kills.
  std::vector<std::string> runc = RunIntoOom(*s, cleanup, kRuncV2, UniqueName("oomv2"));
  INFO("runc-v2: " << fmt::format("{}", fmt::join(runc, " ")));
  CHECK(Count(runc, "/tasks/oom") >= 1);
}

TEST_CASE("oom: an OOM kill while no server runs is published once, before TaskExit",
          "[embed][oom][survival]") {
  NamespaceCleanup cleanup;
  auto s = Survival::Start();
  PrivateContainerd& cd = s->cd();
  const std::string ns = cleanup.Add(UniqueName("oomkill"));
  const std::string id = UniqueName("oomkill");
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  REQUIRE(mkfifo((rootfs + "/go").c_str(), 0600) == 0);
  EventLog events(cd);
  pid_t init = RunWith(cd, kRuntime, ns, rootfs, id,
                       {"sh", "-c", "read x < /go; exec tail /dev/zero"},
                       {"--memory-limit", "33554432"});
  base::UniqueFd init_fd = OpenPidfd(init);
  REQUIRE(init_fd.valid());

  // No server, and none to come until the keeper goes on.
  pid_t keeper = s->TheKeeper();
  REQUIRE(kill(keeper, SIGSTOP) == 0);
  const size_t log_offset = FileSize(s->instance().log);
  pid_t old_server = s->TheServer();
  s->KillServer(old_server);

  {
    base::UniqueFd go(open((rootfs + "/go").c_str(), O_WRONLY | O_CLOEXEC));
    REQUIRE(go.valid());
    REQUIRE(write(go.get(), "go\n", 3) == 3);
  }
  REQUIRE(WaitExited(init_fd, DeadlineIn(60s)));  // the kernel killed it

  REQUIRE(kill(keeper, SIGCONT) == 0);
  absl::StatusOr<pid_t> next = WaitServing(s->instance().log, log_offset, old_server,
                                           DeadlineIn(30s));
  INFO(s->Logs());
  REQUIRE_OK(next);
  REQUIRE_OK(events.WaitFor(" /tasks/exit ", DeadlineIn(30s)));
  RemoveTask(cd, ns, id);
  REQUIRE_OK(events.WaitFor(" /tasks/delete ", DeadlineIn(30s)));
  INFO(events.Text());
  std::vector<EventLog::Exit> exits = events.ExitsOf(id);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].status == 137);
  CHECK(TopicsOf(events, id) == std::vector<std::string>{"/tasks/create", "/tasks/start",
                                                         "/tasks/oom", "/tasks/exit",
                                                         "/tasks/delete"});
}
