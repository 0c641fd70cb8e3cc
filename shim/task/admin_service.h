// AdminService: embedshim.v1.Admin, the shim's own RPCs on its main socket
// (never on a namespace socket): ServeNamespace (for `start`), Upgrade and
// Status (for `upgrade` and `ps`).
#pragma once

#include <functional>
#include <string>

#include "bpf/exit_monitor.h"
#include "keeper/link.h"
#include "shim/task/admin.pb.h"
#include "shim/task/event_publisher.h"
#include "shim/task/task_service.h"
#include "ttrpc/server.h"

namespace shim {

class AdminService {
 public:
  using ServeNamespaceFn = std::function<absl::StatusOr<std::string>(const std::string& ns)>;

  AdminService(TaskService& tasks, bpf::ExitMonitor& monitor, EventPublisher& events,
               keeper::Link& keeper, ttrpc::Server& server, ServeNamespaceFn serve_namespace);
  void RegisterOn(ttrpc::Server& server);

  embedshim::ShimStatus Status() const;

 private:
  TaskService& tasks_;
  bpf::ExitMonitor& monitor_;
  EventPublisher& events_;
  keeper::Link& keeper_;
  ttrpc::Server& server_;
  ServeNamespaceFn serve_namespace_;
  int64_t started_unix_nano_;
};

}  // namespace shim
