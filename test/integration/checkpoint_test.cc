// Checkpoint and restore through io.containerd.embed.v1 on containerd 1.6.
//
// `ctr task checkpoint` goes through containerd (it pauses the task, asks the
// shim for a checkpoint into a directory of its own, resumes, and stores the
// images as content). ctr 1.6 passes CheckpointOptions (--image-path,
// --exit) only for runc's runtime names, and `ctr c restore` needs a
// container made from an image, which these tests (--rootfs) do not have;
// so an image path, --exit and the restore are asked of the shim directly,
// as containerd's client would send them: CheckpointTaskRequest with
// containerd.runc.v1.CheckpointOptions, CreateTaskRequest.checkpoint, Start.
//
// Where `criu check` fails (this project's machine: CRIU 3.17 on kernel 6.18,
// "vdso: Unexpected rt vDSO area bounds"), every checkpoint is a clear
// FailedPrecondition carrying CRIU's reason and the task runs on; the round
// trip runs where `criu check` passes and skips, saying why, elsewhere.
#include <signal.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "runc_options.pb.h"
#include "shim.pb.h"
#include "test/integration/exec_util.h"
#include "test/support/criu.h"
#include "test/support/status_matchers.h"

namespace {

using namespace exec_e2e;
namespace task = containerd::task::v2;

// The first of CRIU's complaints in `criu check`'s (see test/support/criu.h).
std::string FirstReason(const absl::Status& criu_check) {
  std::string text(criu_check.message());
  size_t colon = text.find(": ");
  std::string reasons = colon == std::string::npos ? text : text.substr(colon + 2);
  return reasons.substr(0, reasons.find(';'));
}

absl::Status CheckpointDirectly(E2E& e, const std::string& ns, const std::string& id,
                                const std::string& path,
                                const containerd::runc::v1::CheckpointOptions* options) {
  task::CheckpointTaskRequest req;
  req.set_id(id);
  req.set_path(path);
  if (options != nullptr) {
    req.mutable_options()->set_type_url("containerd.runc.v1.CheckpointOptions");
    req.mutable_options()->set_value(options->SerializeAsString());
  }
  auto client = e.ShimClient();
  ttrpc::CallOptions call = CallIn(ns);
  call.timeout = absl::Seconds(60);  // CRIU may take a while where it works
  return client->Call<google::protobuf::Empty>(kTaskService, "Checkpoint", req, call).status();
}

// A bundle for a task the test creates on the shim itself: a copy of a
// containerd bundle's config.json (its root.path is the --rootfs directory).
std::string CopyBundle(E2E& e, const std::string& ns, const std::string& from,
                       const std::string& name) {
  absl::StatusOr<std::string> config =
      test_support::ReadFile(e.Bundle(ns, from) + "/config.json");
  REQUIRE_OK(config);
  const std::string bundle = e.cd().dir() + "/" + name;
  REQUIRE_OK(test_support::MakeDirs(bundle));
  REQUIRE_OK(test_support::WriteFile(bundle + "/config.json", *config));
  return bundle;
}

// Kill, Wait and Delete of a task made on the shim directly.
void RemoveDirectTask(E2E& e, const std::string& ns, const std::string& id) {
  auto client = e.ShimClient();
  task::KillRequest kill;
  kill.set_id(id);
  kill.set_signal(SIGKILL);
  (void)client->Call<google::protobuf::Empty>(kTaskService, "Kill", kill, CallIn(ns));
  task::WaitRequest wait;
  wait.set_id(id);
  ttrpc::CallOptions long_call = CallIn(ns);
  long_call.timeout = absl::Seconds(30);
  (void)client->Call<task::WaitResponse>(kTaskService, "Wait", wait, long_call);
  task::DeleteRequest del;
  del.set_id(id);
  CHECK_OK(client->Call<task::DeleteResponse>(kTaskService, "Delete", del, CallIn(ns)).status());
}

TEST_CASE("checkpoint: where CRIU cannot run, a clear error and the task runs on",
          "[containerd][shim][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (absl::IsNotFound(criu)) FAIL(criu.message());
  if (criu.ok()) {
    WARN("skipped: criu check passes here, so a failing checkpoint cannot be provoked");
    return;
  }
  const std::string reason = FirstReason(criu);
  auto e = E2E::Start();
  const std::string ns = UniqueName("ckpt");
  const std::string id = UniqueName("ckpt-fail");
  const pid_t pid = RunDetached(e->cd(), ns, e->Rootfs(), id, {"sleep", "100000"});

  SECTION("ctr task checkpoint: through containerd (pause, leave running, resume)") {
    absl::StatusOr<Result> r = e->cd().Ctr({"-n", ns, "task", "checkpoint", id});
    REQUIRE_OK(r);
    INFO(*r << "\nshim log:\n" << e->ShimLog());
    CHECK(r->exit_code != 0);
    CHECK(Contains(r->err, reason));
    CHECK(Contains(r->err, "failed precondition"));
  }
  SECTION("leave running, into an image path of the options") {
    containerd::runc::v1::CheckpointOptions o;
    o.set_image_path(e->cd().dir() + "/images-" + id);
    o.set_work_path(e->cd().dir() + "/work-" + id);
    absl::Status st = CheckpointDirectly(*e, ns, id, e->cd().dir() + "/unused", &o);
    INFO(st.ToString());
    CHECK(absl::IsFailedPrecondition(st));
    CHECK(Contains(std::string(st.message()), reason));
    CHECK(Contains(std::string(st.message()), o.work_path() + "/dump.log"));
  }
  SECTION("exit after it, into the request's path; no work path: the log is kept") {
    containerd::runc::v1::CheckpointOptions o;
    o.set_exit(true);
    absl::Status st = CheckpointDirectly(*e, ns, id, e->cd().dir() + "/images-" + id, &o);
    INFO(st.ToString());
    CHECK(absl::IsFailedPrecondition(st));
    CHECK(Contains(std::string(st.message()), reason));
    CHECK(Contains(std::string(st.message()), e->Bundle(ns, id) + "/criu-dump.log"));
    CHECK(PathExists(e->Bundle(ns, id) + "/criu-dump.log"));
  }

  // The task runs on, as it was: not paused, same pid; it takes an exec and
  // a kill.
  CHECK(RequireRunning(e->cd(), ns, id) == pid);
  CHECK(Alive(pid));
  absl::StatusOr<Result> exec =
      e->cd().Ctr({"-n", ns, "task", "exec", "--exec-id", "after", id, "echo", "still-here"});
  REQUIRE_OK(exec);
  INFO(*exec);
  CHECK(exec->exit_code == 0);
  CHECK(exec->out == "still-here\n");
  CtrOk(e->cd(), {"-n", ns, "task", "kill", "-s", "SIGKILL", id});
  WaitTaskStatus(e->cd(), ns, id, "STOPPED", DeadlineIn(30s));  // ctr 1.6 has no task wait
  CHECK(ListTasks(e->cd(), ns)[id].status == "STOPPED");
  CtrOk(e->cd(), {"-n", ns, "task", "rm", id});
  CtrOk(e->cd(), {"-n", ns, "c", "rm", id});
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("checkpoint: a restore from images CRIU cannot use fails at Start with its reason; "
          "the task stays created and deletes", "[containerd][shim][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (absl::IsNotFound(criu)) FAIL(criu.message());
  auto e = E2E::Start();
  const std::string ns = UniqueName("ckpt");
  const std::string donor = UniqueName("donor");
  RunDetached(e->cd(), ns, e->Rootfs(), donor, {"sleep", "100000"});
  const std::string id = UniqueName("restored");
  const std::string bundle = CopyBundle(*e, ns, donor, "bundle-" + id);
  // What runc reads first; CRIU then finds no images to restore.
  const std::string images = e->cd().dir() + "/images-" + id;
  REQUIRE_OK(test_support::MakeDirs(images));
  REQUIRE_OK(test_support::WriteFile(images + "/descriptors.json",
                                     R"(["/dev/null","/dev/null","/dev/null"])"));

  auto client = e->ShimClient();
  task::CreateTaskRequest create;
  create.set_id(id);
  create.set_bundle(bundle);
  create.set_checkpoint(images);
  auto created = client->Call<task::CreateTaskResponse>(kTaskService, "Create", create, CallIn(ns));
  REQUIRE_OK(created);
  CHECK(created->pid() == 0);  // as runc-v2: nothing runs before Start
  task::StateRequest state;
  state.set_id(id);
  auto s1 = client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(ns));
  REQUIRE_OK(s1);
  CHECK(s1->status() == containerd::v1::types::CREATED);

  task::StartRequest start;
  start.set_id(id);
  ttrpc::CallOptions long_call = CallIn(ns);
  long_call.timeout = absl::Seconds(60);
  auto started = client->Call<task::StartResponse>(kTaskService, "Start", start, long_call);
  INFO(started.status().ToString() << "\nshim log:\n" << e->ShimLog());
  CHECK(absl::IsFailedPrecondition(started.status()));
  CHECK(Contains(std::string(started.status().message()), "restore.log"));
  if (!criu.ok()) CHECK(Contains(std::string(started.status().message()), FirstReason(criu)));
  auto s2 = client->Call<task::StateResponse>(kTaskService, "State", state, CallIn(ns));
  REQUIRE_OK(s2);
  CHECK(s2->status() == containerd::v1::types::CREATED);
  task::DeleteRequest del;
  del.set_id(id);
  CHECK_OK(client->Call<task::DeleteResponse>(kTaskService, "Delete", del, CallIn(ns)).status());
  CHECK(Alive(RequireRunning(e->cd(), ns, donor)));  // the other task never noticed
  test_support::RemoveRuncNamespaceRoot(ns);
}

TEST_CASE("checkpoint: a round trip, checkpoint (ctr and --exit) then restore, where CRIU works",
          "[containerd][shim][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (!criu.ok()) {
    WARN("skipped: " << criu.message());
    return;
  }
  auto e = E2E::Start();
  const std::string ns = UniqueName("ckpt");
  const std::string id = UniqueName("counter");
  const std::string rootfs = e->Rootfs();
  const std::string count = "/count-" + id;
  RunDetached(e->cd(), ns, rootfs, id,
              {"sh", "-c", fmt::format("i=0; while true; do i=$((i+1)); echo $i > {}; "
                                       "usleep 20000; done", count)});

  // Through containerd: paused, checkpointed (left running), resumed, stored.
  std::string name = CtrOk(e->cd(), {"-n", ns, "task", "checkpoint", id}, 120s);
  CHECK(Contains(name, "checkpoint/"));
  RequireRunning(e->cd(), ns, id);

  // Into an image path, stopping it.
  const std::string images = e->cd().dir() + "/images-" + id;
  containerd::runc::v1::CheckpointOptions o;
  o.set_exit(true);
  o.set_image_path(images);
  const std::string bundle = CopyBundle(*e, ns, id, "bundle-restored");
  REQUIRE_OK(CheckpointDirectly(*e, ns, id, e->cd().dir() + "/unused", &o));
  WaitTaskStatus(e->cd(), ns, id, "STOPPED", DeadlineIn(30s));  // ctr 1.6 has no task wait
  CtrOk(e->cd(), {"-n", ns, "task", "rm", id});
  absl::StatusOr<std::string> at_checkpoint = test_support::ReadFile(rootfs + count);
  REQUIRE_OK(at_checkpoint);

  // Restored as a task of its own, made on the shim directly.
  const std::string restored = UniqueName("restored");
  auto client = e->ShimClient();
  task::CreateTaskRequest create;
  create.set_id(restored);
  create.set_bundle(bundle);
  create.set_checkpoint(images);
  REQUIRE_OK(client->Call<task::CreateTaskResponse>(kTaskService, "Create", create, CallIn(ns)));
  task::StartRequest start;
  start.set_id(restored);
  ttrpc::CallOptions long_call = CallIn(ns);
  long_call.timeout = absl::Seconds(60);
  auto started = client->Call<task::StartResponse>(kTaskService, "Start", start, long_call);
  INFO(started.status().ToString() << "\nshim log:\n" << e->ShimLog());
  REQUIRE_OK(started);
  CHECK(started->pid() > 0);
  CHECK(Alive(static_cast<pid_t>(started->pid())));
  // It counts on from where it was.
  const int from = std::stoi(*at_checkpoint);
  const Deadline deadline = DeadlineIn(20s);
  int now = from;
  while (now <= from + 5 && Clock::now() < deadline) {
    absl::StatusOr<std::string> c = test_support::ReadFile(rootfs + count);
    if (c.ok() && !c->empty()) now = std::stoi(*c);
  }
  CHECK(now > from + 5);
  RemoveDirectTask(*e, ns, restored);
  test_support::RemoveRuncNamespaceRoot(ns);
}

}  // namespace
