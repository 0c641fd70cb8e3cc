// The idle-exit race (docs/CRI.md; shim/daemon.cc, the end of RunDaemon): a
// `start` that answers with a daemon lingering after its last Delete and
// Shutdown must keep that daemon, so that the task containerd then creates
// on the answered address finds it. Before the fix the daemon left at the
// end of its linger anyway, and containerd's first call met "ttrpc: closed"
// (containerd 2.3.4's critest, about one run in four).
//
// The linger is lengthened ($EMBED_SHIM_IDLE_LINGER_MS, on the daemon this
// test starts the way containerd's `start` does) so that `start` runs inside
// it without racing. Waits are on the shim's log (inotify) and on pidfds. A
// machine too slow to run `start` within the linger gets another try with a
// twice as long one, and fails saying so after three.
#include <poll.h>
#include <sys/inotify.h>

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "shim.pb.h"
#include "test/integration/shim_e2e_util.h"
#include "test/integration/survival_util.h"

namespace {

using namespace e2e;
namespace task = containerd::task::v2;

// What the daemon logs (shim/daemon.cc) when its linger begins, and when a
// start that answered during it keeps it.
constexpr char kLingerLine[] = "idle: no container left; leaving in";
constexpr char kStayLine[] = "answered with this shim while it lingered";

using Env = std::vector<std::pair<std::string, std::optional<std::string>>>;

// containerd's executable, which `start` reads to tell 1.x from 2.x.
std::string ContainerdBinary(E2E& e) {
  if (UnderTest().containerd.find('/') != std::string::npos) return UnderTest().containerd;
  absl::StatusOr<std::string> path = test_support::FindInPath(UnderTest().containerd, e.cd().path_env());
  REQUIRE_OK(path);
  return *path;
}

// `containerd-shim-embed-v1 start` as containerd runs it, in `bundle`;
// returns the socket of the address it answered (1.x: the address itself,
// 2.x: the bootstrap JSON around it).
std::string RunStart(E2E& e, const std::string& ns, const std::string& id,
                     const std::string& bundle, Env env) {
  SpawnOptions o;
  o.argv = {ShimBinary(), "-namespace", ns, "-address", e.address(), "-publish-binary",
            ContainerdBinary(e), "-id", id, "start"};
  o.cwd = bundle;
  env.emplace_back("TTRPC_ADDRESS", e.cd().ttrpc_address());  // where events go, as containerd sets it
  o.env = std::move(env);
  absl::StatusOr<Result> r = test_support::Run(std::move(o), 60s);
  REQUIRE_OK(r);
  INFO("start: " << r->ToString());
  REQUIRE(r->exit_code == 0);
  size_t at = r->out.find("unix://");
  REQUIRE(at != std::string::npos);
  size_t end = r->out.find('"', at);
  return r->out.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7);
}

enum class LingerEnd { kStayed, kLeft, kNeither };

// Waits until the daemon's log says, after byte `offset`, that it stays, or
// its process `server` exits (a daemon that leaves removes its log with the
// rest of its instance).
LingerEnd WaitLingerEnd(const std::string& log, size_t offset, const base::UniqueFd& server,
                        Deadline deadline) {
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  REQUIRE(in.valid());
  REQUIRE(inotify_add_watch(in.get(), log.c_str(), IN_MODIFY) >= 0);
  for (;;) {
    absl::StatusOr<std::string> text = test_support::ReadFile(log);
    if (text.ok() && text->size() > offset && Contains(text->substr(offset), kStayLine))
      return LingerEnd::kStayed;
    if (Exited(server)) return LingerEnd::kLeft;
    if (Clock::now() >= deadline) return LingerEnd::kNeither;
    pollfd p[2] = {{in.get(), POLLIN, 0}, {server.get(), POLLIN, 0}};
    if (poll(p, 2, MillisUntil(deadline)) > 0 && (p[0].revents & POLLIN)) {
      char buf[4096];
      while (read(in.get(), buf, sizeof buf) > 0) {
      }
    }
  }
}

// One try with a linger of `linger`. False if `start` came too late (the
// daemon had left, and `start` started another): nothing was shown then.
bool StartDuringLinger(std::chrono::seconds linger) {
  auto e = E2E::Start();
  INFO(UnderTest().Describe() << ", linger " << linger.count() << " s");
  const std::string ns = UniqueName("linger");
  const std::string linger_ms = std::to_string(linger.count() * 1000);

  // A daemon with the long linger, started as containerd's `start` starts one.
  test_support::ScopedTempDir spawn_bundle("embed-linger-", "/tmp");
  REQUIRE(spawn_bundle.ok());
  const std::string socket = RunStart(*e, ns, UniqueName("spawn"), spawn_bundle.path(),
                                      {{"EMBED_SHIM_IDLE_LINGER_MS", linger_ms}});
  const pid_t server = e->TheDaemon();
  base::UniqueFd server_fd = OpenPidfd(server);
  REQUIRE(server_fd.valid());

  // A task runs through ctr (containerd's own `start` answers with that
  // daemon) and is deleted: Delete, then Shutdown, and the daemon, left
  // without a container, lingers. Its spec is kept for the task below.
  const std::string done = UniqueName("done");
  RunDetached(e->cd(), ns, e->Rootfs(), done, {"sleep", "100003"});
  absl::StatusOr<std::string> spec = test_support::ReadFile(e->Bundle(ns, done) + "/config.json");
  REQUIRE_OK(spec);
  const std::string log = e->instance().log;
  const size_t before_rm = survival::FileSize(log);
  CtrOk(e->cd(), {"-n", ns, "tasks", "rm", "-f", done});
  CtrOk(e->cd(), {"-n", ns, "containers", "rm", done});
  REQUIRE_OK(survival::WaitForFileText(log, before_rm, DeadlineIn(30s), [](std::string_view t) {
    return Contains(t, kLingerLine);
  }));
  const size_t lingering = survival::FileSize(log);

  // A `start` for a new task comes during the linger. Its environment only
  // matters if it comes too late and starts a daemon: that one leaves at once.
  const std::string app = UniqueName("app");
  const std::string bundle = e->cd().dir() + "/" + app;
  REQUIRE_OK(test_support::MakeDirs(bundle));
  const std::string answered =
      RunStart(*e, ns, app, bundle,
               {{"EMBED_SHIM_IDLE_LINGER_MS", "100"}, {"EMBED_SHIM_UNUSED_LIMIT_MS", "100"}});
  ShimProcesses after_start = e->processes();
  INFO("shim processes after start: " << after_start.ToString());
  for (pid_t p : after_start.servers) {
    if (p != server) {
      WARN("the " << linger.count() << " s linger was over before `start` ran "
                  << "(it started a new daemon): this machine is too slow for that linger");
      return false;
    }
  }
  REQUIRE(answered == socket);  // the lingering daemon's address

  // The linger ends: the daemon stays (before the fix it left, and the
  // address `start` answered with led nowhere).
  LingerEnd end = WaitLingerEnd(log, lingering, server_fd, DeadlineIn(linger + 30s));
  INFO("shim log after the linger began:\n"
       << survival::Tail(e->ShimLog().substr(std::min(lingering, e->ShimLog().size()))));
  REQUIRE(end != LingerEnd::kNeither);
  REQUIRE(end == LingerEnd::kStayed);

  // The task that start answered for runs through that address, as
  // containerd would create it: to its exit status.
  absl::StatusOr<std::string> rootfs = e->cd().MakeBusyboxRootfs(app + "/rootfs");
  REQUIRE_OK(rootfs);
  // That spec, with this task's id (its cgroup) and a command that exits 3.
  const std::string app_spec =
      absl::StrReplaceAll(*spec, {{done, app}, {R"("sleep","100003")", R"("sh","-c","exit 3")"}});
  REQUIRE(Contains(app_spec, "exit 3"));
  REQUIRE_OK(test_support::WriteFile(bundle + "/config.json", app_spec));
  absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> client =
      ttrpc::BlockingClient::Connect(answered);
  REQUIRE_OK(client);
  task::CreateTaskRequest create;
  create.set_id(app);
  create.set_bundle(bundle);
  absl::StatusOr<task::CreateTaskResponse> created =
      (*client)->Call<task::CreateTaskResponse>(kTaskService, "Create", create, CallIn(ns));
  REQUIRE_OK(created);
  REQUIRE(created->pid() > 0);
  task::StartRequest start;
  start.set_id(app);
  REQUIRE_OK((*client)->Call<task::StartResponse>(kTaskService, "Start", start, CallIn(ns)));
  task::WaitRequest wait;
  wait.set_id(app);
  ttrpc::CallOptions wait_opts = CallIn(ns);
  wait_opts.timeout = absl::Seconds(30);
  absl::StatusOr<task::WaitResponse> waited =
      (*client)->Call<task::WaitResponse>(kTaskService, "Wait", wait, wait_opts);
  REQUIRE_OK(waited);
  CHECK(waited->exit_status() == 3);
  task::DeleteRequest del;
  del.set_id(app);
  absl::StatusOr<task::DeleteResponse> deleted =
      (*client)->Call<task::DeleteResponse>(kTaskService, "Delete", del, CallIn(ns));
  REQUIRE_OK(deleted);
  CHECK(deleted->exit_status() == 3);
  CHECK(e->TheDaemon() == server);

  // With no container left (its Shutdown came with the first task), the
  // daemon lingers again and leaves, and nothing of it is left.
  client->reset();
  std::vector<base::UniqueFd> shim_fds;
  for (pid_t p : e->processes().all()) shim_fds.push_back(OpenPidfd(p));
  for (const base::UniqueFd& fd : shim_fds) CHECK(WaitExited(fd, DeadlineIn(linger + 30s)));
  CHECK_FALSE(PathExists(e->instance().dir));
  return true;
}

}  // namespace

TEST_CASE("idle race: a start that answers with a lingering daemon keeps it, and its task runs "
          "there",
          "[containerd][shim][idle]") {
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (StartDuringLinger(std::chrono::seconds(3 << attempt))) return;
  }
  FAIL("`start` never ran within the daemon's linger (3, 6, 12 s): the machine is too slow "
       "for this test; nothing about the race was shown");
}
