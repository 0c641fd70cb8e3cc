// `delete`: containerd runs it after every teardown and after it lost a
// shim. With the daemon alive it asks the daemon (kill, wait, delete), which
// knows the exit. With the daemon gone it does the same by hand from the
// persisted record and the pinned exited map. Either way it prints a
// DeleteResponse with the container's real exit status, and touches no
// other container.
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "base/absl_fmt.h"
#include "bpf/exit_monitor.h"
#include "bpf/pidfd.h"
#include "google/protobuf/empty.pb.h"
#include "shim.pb.h"
#include "shim/manager/commands.h"
#include "shim/oci/mount.h"
#include "shim/oci/runc.h"
#include "shim/oci/teardown.h"
#include "shim/process/clock.h"
#include "shim/process/exit_report.h"
#include "shim/process/identifier.h"
#include "shim/process/runc_runtime.h"
#include "shim/process/runtime_options.h"
#include "shim/store/paths.h"
#include "shim/store/state_store.h"
#include "ttrpc/client.h"

namespace shim {
namespace {

namespace task = containerd::task::v2;

// Through the live daemon: the normal Task API, so its state stays whole.
absl::StatusOr<task::DeleteResponse> DeleteThroughDaemon(const InstancePaths& paths,
                                                         const std::string& ns,
                                                         const std::string& id) {
  auto client = ttrpc::BlockingClient::Connect(paths.socket);
  if (!client.ok()) return client.status();
  ttrpc::CallOptions opts;
  opts.metadata = {{"containerd-namespace-ttrpc", ns}};
  opts.timeout = absl::Seconds(10);
  const std::string svc = "containerd.task.v2.Task";

  task::KillRequest kill;
  kill.set_id(id);
  kill.set_signal(SIGKILL);
  kill.set_all(true);
  auto killed = (*client)->Call<google::protobuf::Empty>(svc, "Kill", kill, opts);
  if (!killed.ok() && !absl::IsNotFound(killed.status()) &&
      !absl::IsFailedPrecondition(killed.status()))
    return killed.status();
  task::WaitRequest wait;
  wait.set_id(id);
  auto waited = (*client)->Call<task::WaitResponse>(svc, "Wait", wait, opts);
  if (!waited.ok()) return waited.status();
  task::DeleteRequest del;
  del.set_id(id);
  auto deleted = (*client)->Call<task::DeleteResponse>(svc, "Delete", del, opts);
  // As containerd does after a Delete: the shim leaves if it serves nothing.
  task::ShutdownRequest shutdown;
  shutdown.set_id(id);
  (void)(*client)->Call<google::protobuf::Empty>(svc, "Shutdown", shutdown, opts);
  return deleted;
}

// By hand, from the record: the daemon is gone.
task::DeleteResponse DeleteByHand(const InstancePaths& paths, embedshim::ContainerRecord r) {
  int64_t exited_at = r.exited_at_unix_nano();
  uint32_t exit_status = r.exit_status();
  if (r.status() != embedshim::STOPPED && r.pid() != 0) {
    pid_t pid = static_cast<pid_t>(r.pid());
    // The pinned map may already hold the exit (it happened while no server ran).
    auto exited = bpf::ExitMonitor::LookupExited(paths.bpf, pid);
    if (!exited.ok() || !bpf::SameStart(exited->start_boottime, r.start_boottime())) {
      // Still running: kill it through a pidfd, which cannot hit a reused pid.
      if (auto pidfd = bpf::PidfdIfSameLive(pid, r.start_boottime()); pidfd.ok()) {
        syscall(SYS_pidfd_send_signal, pidfd->get(), SIGKILL, nullptr, 0);
        pollfd p{pidfd->get(), POLLIN, 0};
        poll(&p, 1, 5000);
      }
      exited = bpf::ExitMonitor::LookupExited(paths.bpf, pid);
    }
    if (exited.ok() && bpf::SameStart(exited->start_boottime, r.start_boottime())) {
      exit_status = ExitStatusOf(exited->wait_status);
      exited_at = exited->exited_at_ns;
    } else {
      exit_status = 128 + SIGKILL;  // we killed it and could not read its status
      exited_at = NowUnixNano();
    }
  }
  oci::TeardownOptions teardown;
  absl::Status deleted;
  teardown.after_delete = [&](const absl::Status& st) {
    deleted = st;
    if (!st.ok()) fmt::print(stderr, "delete: runc delete --force {}: {}\n", r.id(), st);
    process::StopLoggerOf(r);  // the container is gone: its logger had EOF
  };
  absl::Status st = oci::TearDown(oci::Runc(RuncConfigFor(r)), r.id(), r.bundle(), teardown);
  if (!st.ok() && deleted.ok()) fmt::print(stderr, "delete: unmount: {}\n", st);
  (void)StateStore(paths.state).Remove(r.namespace_(), r.id());
  r.set_exit_status(exit_status);
  r.set_exited_at_unix_nano(exited_at);
  return DeleteResponseOf(r);
}

}  // namespace

int RunDelete(const Flags& flags) {
  if (!IsValidIdentifier(flags.namespace_) || !IsValidIdentifier(flags.id)) {
    fmt::print(stderr, "delete: -namespace {:?} and -id {:?} must be valid identifiers\n",
               flags.namespace_, flags.id);
    return 1;
  }
  InstancePaths paths = PathsFor(flags.address);
  StateStore store(paths.state);
  auto record = store.Load(flags.namespace_, flags.id);
  task::DeleteResponse resp;
  if (record.ok() && record->status() == embedshim::DELETED) {
    resp = DeleteResponseOf(*record);  // deleted normally: its tombstone has the real exit
  } else if (!record.ok()) {
    // Nothing persisted: deleted normally, or never created. Only make sure
    // nothing is left mounted in this container's own bundle.
    if (!flags.bundle.empty()) (void)oci::UnmountRootfs(oci::RootfsOf(flags.bundle));
    resp.set_exit_status(0);
    SetTimestamp(resp.mutable_exited_at(), NowUnixNano());
  } else if (auto via_daemon = DeleteThroughDaemon(paths, flags.namespace_, flags.id);
             via_daemon.ok()) {
    resp = *via_daemon;
  } else {
    resp = DeleteByHand(paths, *record);
  }
  std::string out = resp.SerializeAsString();
  fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace shim
