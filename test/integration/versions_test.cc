// What each containerd version changes for a shim (containerd v2.0.0
// core/runtime/v2/shim.go, v2.3.0 pkg/shim/util.go), on the containerd
// under test ($EMBED_CONTAINERD: Debian's 1.6, or a peer's 1.7.34, 2.1.9,
// 2.3.4; see test/integration/meson.build):
//   - start's answer: the plain address for 1.x, the bootstrap JSON of
//     version 3 for 2.x (which then writes bootstrap.json and calls
//     containerd.task.v3.Task), and reload after a containerd restart;
//   - containerd.task.v3.Task answers as v2 does;
//   - exec through ctr;
//   - a Create on an existing connection for a task whose `start` never ran,
//     with no Shutdown (2.x CRI does both for a pod's containers);
//   - [containerd2] `-info` as 2.x's own ctr reads it; [cri-features] (run on 2.3.4;
//     2.1.9's CRI introspects io.containerd.runc.v2 runtimes only, and logs so) CRI's runtime
//     handler features for embed equal to runc-v2's.
#include <poll.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "shim.pb.h"
#include "test/integration/shim_e2e_util.h"

namespace {

using namespace e2e;
namespace task = containerd::task::v2;

constexpr char kTaskV3[] = "containerd.task.v3.Task";

// The task's socket, from the `address` file `start` wrote into its bundle.
std::string TaskSocket(E2E& e, const std::string& ns, const std::string& id) {
  absl::StatusOr<std::string> address = test_support::ReadFile(e.Bundle(ns, id) + "/address");
  REQUIRE_OK(address);
  REQUIRE(address->starts_with("unix://"));
  return address->substr(7);
}

std::unique_ptr<ttrpc::BlockingClient> Dial(const std::string& socket) {
  absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> c = ttrpc::BlockingClient::Connect(socket);
  REQUIRE_OK(c);
  return std::move(*c);
}

task::StateResponse StateOver(ttrpc::BlockingClient& client, const char* service,
                              const std::string& ns, const std::string& id) {
  task::StateRequest req;
  req.set_id(id);
  absl::StatusOr<task::StateResponse> resp =
      client.Call<task::StateResponse>(service, "State", req, CallIn(ns));
  REQUIRE_OK(resp);
  return *resp;
}

}  // namespace

TEST_CASE("versions: start announces the Task API this containerd takes; a restart reloads the task, "
          "which stays deletable",
          "[containerd][versions]") {
  INFO(UnderTest().Describe());
  auto e = E2E::Start();
  const std::string ns = UniqueName("ver");
  const std::string id = UniqueName("announce");
  pid_t pid = RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});

  absl::StatusOr<std::string> address = test_support::ReadFile(e->Bundle(ns, id) + "/address");
  REQUIRE_OK(address);
  CHECK(address->starts_with("unix://"));  // what 1.x reloads from, without trimming
  // containerd 2.x writes bootstrap.json itself from start's answer.
  absl::StatusOr<std::string> bootstrap =
      test_support::ReadFile(e->Bundle(ns, id) + "/bootstrap.json");
  if (UnderTest().is_2x()) {
    REQUIRE_OK(bootstrap);
    INFO("bootstrap.json: " << *bootstrap);
    CHECK(Contains(*bootstrap, "\"version\":3"));
    CHECK(Contains(*bootstrap, "\"protocol\":\"ttrpc\""));
    CHECK(Contains(*bootstrap, "\"address\":\"" + *address + "\""));
  } else {
    CHECK_FALSE(bootstrap.ok());
  }

  REQUIRE_OK(e->cd().Restart());
  CHECK(RequireRunning(e->cd(), ns, id) == pid);
  CtrOk(e->cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", id});
  absl::StatusOr<Result> rm;
  for (Deadline d = DeadlineIn(20s); Clock::now() < d;) {  // the exit may still be on its way
    rm = e->cd().Ctr({"-n", ns, "tasks", "rm", id});
    REQUIRE_OK(rm);
    if (rm->exit_code == 0) break;
    poll(nullptr, 0, 50);
  }
  INFO(*rm);
  CHECK(rm->exit_code == 0);
  CHECK_FALSE(ListTasks(e->cd(), ns).contains(id));
  CtrOk(e->cd(), {"-n", ns, "containers", "rm", id});
}

TEST_CASE("versions: containerd.task.v3.Task answers as containerd.task.v2.Task does",
          "[containerd][versions]") {
  INFO(UnderTest().Describe());
  auto e = E2E::Start();
  const std::string ns = UniqueName("ver");
  const std::string id = UniqueName("v3");
  pid_t pid = RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});

  auto client = Dial(TaskSocket(*e, ns, id));
  task::StateResponse v3 = StateOver(*client, kTaskV3, ns, id);
  task::StateResponse v2 = StateOver(*client, kTaskService, ns, id);
  CHECK(v3.SerializeAsString() == v2.SerializeAsString());
  CHECK(v3.pid() == static_cast<uint32_t>(pid));
  CHECK(v3.status() == containerd::v1::types::RUNNING);

  task::ConnectRequest connect;
  connect.set_id(id);
  absl::StatusOr<task::ConnectResponse> c =
      client->Call<task::ConnectResponse>(kTaskV3, "Connect", connect, CallIn(ns));
  REQUIRE_OK(c);
  CHECK(c->task_pid() == static_cast<uint32_t>(pid));

  task::PidsRequest pids;
  pids.set_id(id);
  absl::StatusOr<task::PidsResponse> p =
      client->Call<task::PidsResponse>(kTaskV3, "Pids", pids, CallIn(ns));
  REQUIRE_OK(p);
  REQUIRE(p->processes_size() >= 1);
  CHECK(p->processes(0).pid() == static_cast<uint32_t>(pid));
}

TEST_CASE("versions: ctr task exec runs in the container and returns its exit code",
          "[containerd][versions]") {
  INFO(UnderTest().Describe());
  auto e = E2E::Start();
  const std::string ns = UniqueName("ver");
  const std::string id = UniqueName("exec");
  RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});
  absl::StatusOr<Result> r = e->cd().Ctr({"-n", ns, "tasks", "exec", "--exec-id",
                                          UniqueName("x"), id, "sh", "-c", "echo in-$0; exit 5",
                                          "box"});
  REQUIRE_OK(r);
  INFO(*r);
  CHECK(r->exit_code == 5);
  CHECK(Contains(r->out, "in-box"));
  RequireRunning(e->cd(), ns, id);
}

TEST_CASE("versions: a Create on a task's connection for a task whose start never ran, with no "
          "Shutdown after its Delete",
          "[containerd][versions]") {
  // containerd 2.x's CRI sends a pod's containers on the pause container's
  // connection without running `start` for them, and may skip Shutdown.
  INFO(UnderTest().Describe());
  auto e = E2E::Start();
  const std::string ns = UniqueName("ver");
  const std::string pause = UniqueName("pause");
  pid_t pause_pid = RunDetached(e->cd(), ns, e->Rootfs(), pause, {"sleep", "100000"});
  auto client = Dial(TaskSocket(*e, ns, pause));

  // A bundle containerd never made: the pause's spec with another id (its
  // cgroup path), and a rootfs of its own.
  const std::string app = UniqueName("app");
  const std::string bundle = e->cd().dir() + "/" + app;
  REQUIRE_OK(test_support::MakeDirs(bundle));
  absl::StatusOr<std::string> rootfs = e->cd().MakeBusyboxRootfs(app + "/rootfs");
  REQUIRE_OK(rootfs);
  absl::StatusOr<std::string> spec = test_support::ReadFile(e->Bundle(ns, pause) + "/config.json");
  REQUIRE_OK(spec);
  std::string app_spec = absl::StrReplaceAll(*spec, {{pause, app}});
  REQUIRE(app_spec != *spec);
  REQUIRE_OK(test_support::WriteFile(bundle + "/config.json", app_spec));

  task::CreateTaskRequest create;
  create.set_id(app);
  create.set_bundle(bundle);
  absl::StatusOr<task::CreateTaskResponse> created =
      client->Call<task::CreateTaskResponse>(kTaskV3, "Create", create, CallIn(ns));
  REQUIRE_OK(created);
  REQUIRE(created->pid() > 0);
  task::StartRequest start;
  start.set_id(app);
  absl::StatusOr<task::StartResponse> started =
      client->Call<task::StartResponse>(kTaskV3, "Start", start, CallIn(ns));
  REQUIRE_OK(started);
  CHECK(StateOver(*client, kTaskV3, ns, app).status() == containerd::v1::types::RUNNING);

  task::KillRequest kill;
  kill.set_id(app);
  kill.set_signal(SIGKILL);
  REQUIRE_OK(client->Call<google::protobuf::Empty>(kTaskV3, "Kill", kill, CallIn(ns)));
  task::WaitRequest wait;
  wait.set_id(app);
  ttrpc::CallOptions wait_opts = CallIn(ns);
  wait_opts.timeout = absl::Seconds(20);
  absl::StatusOr<task::WaitResponse> waited =
      client->Call<task::WaitResponse>(kTaskV3, "Wait", wait, wait_opts);
  REQUIRE_OK(waited);
  CHECK(waited->exit_status() == 137);
  task::DeleteRequest del;
  del.set_id(app);
  absl::StatusOr<task::DeleteResponse> deleted =
      client->Call<task::DeleteResponse>(kTaskV3, "Delete", del, CallIn(ns));
  REQUIRE_OK(deleted);
  CHECK(deleted->exit_status() == 137);

  // No Shutdown: the pause container and its connection go on.
  CHECK(StateOver(*client, kTaskV3, ns, pause).pid() == static_cast<uint32_t>(pause_pid));
  CHECK(RequireRunning(e->cd(), ns, pause) == pause_pid);
  CHECK(e->TheDaemon() > 0);
}

TEST_CASE("versions: ctr plugins inspect-runtime reads -info: name, version, options and runc's "
          "features",
          "[containerd][versions][containerd2]") {
  INFO(UnderTest().Describe());
  REQUIRE(UnderTest().is_2x());
  auto e = E2E::Start();
  const std::string config = e->cd().dir() + "/runtime.toml";
  REQUIRE_OK(test_support::WriteFile(config, "BinaryName = \"runc\"\n"));
  std::string out = CtrOk(e->cd(), {"plugins", "inspect-runtime", "--runtime", kRuntime,
                                    "--runtime-config-path", config});
  INFO(out);
  CHECK(Contains(out, "\"Name\": \"io.containerd.embed.v1\""));
  CHECK(Contains(out, fmt::format("\"Version\": \"{}\"", SHIM_VERSION)));
  CHECK(Contains(out, fmt::format("\"config_path\": \"{}\"", config)));
  // runc's own features, as containerd unpacked them from our Any.
  absl::StatusOr<Result> features = test_support::Run({"runc", "features"}, 30s);
  REQUIRE_OK(features);
  REQUIRE(features->exit_code == 0);
  CHECK(Contains(out, "\"ociVersionMax\""));
  CHECK(Contains(out, "\"rro\""));
  CHECK(Contains(features->out, "\"rro\""));
}

TEST_CASE("versions: 2.x's CRI finds embed's runtime features as it finds runc-v2's",
          "[containerd][versions][containerd2][cri-features]") {
  INFO(UnderTest().Describe());
  REQUIRE(UnderTest().is_2x());
  PrivateContainerdOptions o;
  o.disable_cri = false;
  o.extra_config = R"(
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.embed]
  runtime_type = "io.containerd.embed.v1"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runcv2]
  runtime_type = "io.containerd.runc.v2"
)";
  auto e = E2E::Start(o);
  // CRI introspects each handler at its start (debug log), through the
  // shim's -info: the peer's own runc-v2 (its bin dir is on PATH) and ours.
  for (const char* handler : {"embed", "runcv2"}) {
    REQUIRE_OK(e->cd().WaitForLog(fmt::format("runtime \\\"{}\\\" supports CRI userns", handler),
                                  30s));
  }
  auto lines_of = [&](const std::string& handler) {
    std::vector<std::string> out;
    for (const std::string& line : test_support::SplitLines(e->cd().Log())) {
      const std::string key = fmt::format("runtime \\\"{}\\\" ", handler);
      size_t at = line.find(key);
      if (at == std::string::npos || !Contains(line, "support")) continue;
      out.push_back(line.substr(at + key.size()));
    }
    return out;
  };
  std::vector<std::string> embed = lines_of("embed"), runcv2 = lines_of("runcv2");
  INFO("embed: " << absl::StrJoin(embed, " | ") << "\nrunc-v2: " << absl::StrJoin(runcv2, " | "));
  CHECK(embed == runcv2);
  CHECK(std::find(embed.begin(), embed.end(), "supports recursive read-only mounts\"") !=
        embed.end());
  CHECK_FALSE(e->cd().LogContains("failed to introspect features of runtime \\\"embed\\\""));
}
