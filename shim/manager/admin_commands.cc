// `ps` and `upgrade`: what a user types, answered by the running shim over
// its main socket (the same peer-uid check applies).
#include <time.h>
#include <unistd.h>

#include <cstdio>

#include "base/absl_fmt.h"
#include "google/protobuf/util/json_util.h"
#include "shim/manager/commands.h"
#include "shim/process/clock.h"
#include "shim/store/paths.h"
#include "shim/task/admin.pb.h"
#include "ttrpc/client.h"

namespace shim {
namespace {

constexpr char kService[] = "embedshim.v1.Admin";
constexpr char kDefaultAddress[] = "/run/containerd/containerd.sock";

std::string Age(int64_t since_unix_nano) {
  if (since_unix_nano <= 0) return "-";
  int64_t s = (NowUnixNano() - since_unix_nano) / 1'000'000'000;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{}h", s / 86400, s % 86400 / 3600);
}

absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> ConnectShim(const Flags& flags,
                                                                   std::string* address) {
  *address = flags.address.empty() ? kDefaultAddress : flags.address;
  InstancePaths paths = PathsFor(*address);
  auto client = ttrpc::BlockingClient::Connect(paths.socket);
  if (!client.ok())
    return absl::UnavailableError(fmt::format(
        "no shim runs for containerd {} ({}: {}); pass that containerd's socket with -address",
        *address, paths.socket, client.status().message()));
  return client;
}

absl::StatusOr<embedshim::ShimStatus> GetStatus(ttrpc::BlockingClient& client) {
  ttrpc::CallOptions opts;
  opts.timeout = absl::Seconds(10);
  return client.Call<embedshim::ShimStatus>(kService, "Status", embedshim::StatusRequest(),
                                            opts);
}

}  // namespace

int RunPs(const Flags& flags) {
  std::string address;
  auto client = ConnectShim(flags, &address);
  if (!client.ok()) {
    fmt::print(stderr, "ps: {}\n", client.status().message());
    return 1;
  }
  auto status = GetStatus(**client);
  if (!status.ok()) {
    fmt::print(stderr, "ps: {}\n", status.status());
    return 1;
  }
  if (flags.json) {
    std::string json;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.preserve_proto_field_names = true;
    opts.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(*status, &json, opts);
    fmt::print("{}", json);
    return 0;
  }
  const auto& s = *status;
  fmt::print("{:<16} {:<24} {:>8} {:<8} {:>5} {:>7} {}\n", "NAMESPACE", "ID", "PID", "STATUS",
             "EXIT", "AGE", "PID-CHECK");
  for (const auto& c : s.containers()) {
    std::string exit = c.status() == "stopped" ? std::to_string(c.exit_status()) : "-";
    fmt::print("{:<16} {:<24} {:>8} {:<8} {:>5} {:>7} {}\n", c.namespace_(), c.id(), c.pid(),
               c.status(), exit, Age(c.created_at_unix_nano()), c.pid_check());
  }
  fmt::print("\nshim {} for containerd {}\n", s.version(), address);
  fmt::print("  keeper pid {} (up {}), server pid {} (up {}), {} connections\n", s.keeper_pid(),
             Age(s.keeper_started_unix_nano()), s.server_pid(),
             Age(s.server_started_unix_nano()), s.connections());
  fmt::print("  exit monitor {} ({}), {} tracked pids, {} pending exits, {} events queued\n",
             s.exit_monitor_version(), s.exit_monitor_pinned() ? "pinned" : "not pinned",
             s.tracked_pids(), s.pending_exits(), s.events_queued());
  return 0;
}

int RunUpgrade(const Flags& flags) {
  std::string address;
  auto client = ConnectShim(flags, &address);
  if (!client.ok()) {
    fmt::print(stderr, "upgrade: {}\n", client.status().message());
    return 1;
  }
  ttrpc::CallOptions opts;
  opts.timeout = absl::Seconds(10);
  auto before = (*client)->Call<embedshim::UpgradeResponse>(kService, "Upgrade",
                                                            embedshim::UpgradeRequest(), opts);
  if (!before.ok()) {
    fmt::print(stderr, "upgrade: {}\n", before.status());
    return 1;
  }
  // Our connection lives in the keeper, so it survives the upgrade: ask
  // until a new server answers.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    auto now = GetStatus(**client);
    if (now.ok() && now->server_pid() != before->server_pid()) {
      fmt::print("upgraded: server pid {} -> {}, keeper pid {}, shim {}, exit monitor {}\n",
                 before->server_pid(), now->server_pid(), now->keeper_pid(), now->version(),
                 now->exit_monitor_version());
      return 0;
    }
    usleep(50'000);
  }
  fmt::print(stderr, "upgrade: no new server answered within 30 s; see the shim's log\n");
  return 1;
}

}  // namespace shim
