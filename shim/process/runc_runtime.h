// RuncRuntime: the process layer's Runtime seam, done with runc (or crun)
// as runc-v2 drives it: the rootfs mounted, containerd's fifos opened for
// the container itself, a console socket for terminals. Blocking: workers only.
#pragma once

#include "shim/process/environment.h"

namespace shim::process {

class RuncRuntime final : public Runtime {
 public:
  absl::StatusOr<Spawned> Create(const embedshim::ContainerRecord& c, bool replayed) override;
  absl::Status Start(const embedshim::ContainerRecord& c, bool replayed) override;
  absl::StatusOr<Spawned> Exec(const embedshim::ContainerRecord& c,
                               const embedshim::ExecRecord& exec,
                               const std::function<absl::Status(pid_t)>& on_spawned) override;
  absl::Status Kill(const embedshim::ContainerRecord& c, int signal, bool all) override;
  absl::Status Delete(const embedshim::ContainerRecord& c, bool force) override;
  absl::Status Pause(const embedshim::ContainerRecord& c) override;
  absl::Status Resume(const embedshim::ContainerRecord& c) override;
  absl::StatusOr<std::vector<pid_t>> Ps(const embedshim::ContainerRecord& c) override;
  absl::Status Update(const embedshim::ContainerRecord& c,
                      const std::string& resources_json) override;
  bool WaitsInInit(pid_t pid) override;
  absl::Status Checkpoint(const embedshim::ContainerRecord& c,
                          const CheckpointSpec& spec) override;
  absl::StatusOr<Spawned> Restore(const embedshim::ContainerRecord& c,
                                  const std::function<absl::Status(pid_t)>& on_spawned) override;
};

// Makes sure the container's binary:// logger (its record's logger_pid) is
// gone: it exits by itself at EOF, else SIGTERM, else SIGKILL (runc-v2's
// order at delete). Blocking, up to 2 + 12 s: workers and `delete` only.
void StopLoggerOf(const embedshim::ContainerRecord& r);

}  // namespace shim::process
