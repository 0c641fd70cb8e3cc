#include "shim/task/admin_service.h"

#include <time.h>
#include <unistd.h>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "bpf/pidfd.h"
#include "keeper/link.h"
#include "shim/process/clock.h"

namespace shim {
namespace {

constexpr char kService[] = "embedshim.v1.Admin";

// A process's start as wall-clock time, from its start_boottime.
int64_t StartedUnixNano(pid_t pid) {
  auto boot_start = bpf::ReadStartBoottime(pid);
  if (!boot_start.ok()) return 0;
  timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t since = int64_t{boot.tv_sec} * 1'000'000'000 + boot.tv_nsec -
                  static_cast<int64_t>(*boot_start);
  return NowUnixNano() - since;
}

// Wraps a typed handler: decode Req, call fn, encode the reply.
template <class Req, class Resp>
ttrpc::Handler Typed(std::function<absl::StatusOr<Resp>(const Req&)> fn) {
  return [fn = std::move(fn)](ttrpc::RequestContext ctx, std::string payload,
                              ttrpc::Responder r) {
    // Only the main socket: a namespace socket serves containerd's tasks.
    if (!keeper::ListenerLabel(ctx).empty())
      return r.Reply(absl::PermissionDeniedError("admin calls go to the shim's main socket"));
    Req req;
    if (!req.ParseFromString(payload))
      return r.Reply(absl::InvalidArgumentError(
          fmt::format("cannot decode {}", Req::descriptor()->full_name())));
    absl::StatusOr<Resp> resp = fn(req);
    if (!resp.ok()) return r.Reply(resp.status());
    r.Reply(resp->SerializeAsString());
  };
}

}  // namespace

AdminService::AdminService(TaskService& tasks, bpf::ExitMonitor& monitor,
                           EventPublisher& events, keeper::Link& keeper, ttrpc::Server& server,
                           ServeNamespaceFn serve_namespace)
    : tasks_(tasks), monitor_(monitor), events_(events), keeper_(keeper), server_(server),
      serve_namespace_(std::move(serve_namespace)), started_unix_nano_(NowUnixNano()) {}

void AdminService::RegisterOn(ttrpc::Server& server) {
  using namespace embedshim;
  server.Register(kService, "ServeNamespace",
                  Typed<ServeNamespaceRequest, ServeNamespaceResponse>(
                      [this](const ServeNamespaceRequest& req)
                          -> absl::StatusOr<ServeNamespaceResponse> {
                        auto address = serve_namespace_(req.namespace_());
                        if (!address.ok()) return address.status();
                        ServeNamespaceResponse resp;
                        resp.set_address(*address);
                        return resp;
                      }));
  server.Register(kService, "Upgrade",
                  Typed<UpgradeRequest, UpgradeResponse>(
                      [this](const UpgradeRequest&) -> absl::StatusOr<UpgradeResponse> {
                        base::LogInfo("upgrade requested: the keeper re-executes itself, then "
                                "starts a server from the installed binary");
                        keeper_.Upgrade();  // sent after this reply
                        UpgradeResponse resp;
                        resp.set_server_pid(static_cast<uint32_t>(getpid()));
                        return resp;
                      }));
  server.Register(kService, "Status",
                  Typed<StatusRequest, ShimStatus>(
                      [this](const StatusRequest&) -> absl::StatusOr<ShimStatus> {
                        return Status();
                      }));
}

embedshim::ShimStatus AdminService::Status() const {
  embedshim::ShimStatus s;
  s.set_version(SHIM_VERSION);
  s.set_server_pid(static_cast<uint32_t>(getpid()));
  s.set_keeper_pid(static_cast<uint32_t>(getppid()));
  s.set_keeper_started_unix_nano(StartedUnixNano(getppid()));
  s.set_server_started_unix_nano(started_unix_nano_);
  s.set_connections(static_cast<uint32_t>(server_.connection_count()));
  s.set_exit_monitor_version(bpf::ExitMonitor::Version());
  if (auto stats = monitor_.Stats(); stats.ok()) {
    s.set_exit_monitor_pinned(stats->pinned);
    s.set_tracked_pids(stats->tracked);
    s.set_pending_exits(stats->pending_exits);
  }
  s.set_events_queued(events_.queued());
  for (auto& c : tasks_.Snapshot()) *s.add_containers() = std::move(c);
  return s;
}

}  // namespace shim
