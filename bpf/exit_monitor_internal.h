// What the three parts of ExitMonitor share (run time: exit_monitor.cc;
// pins: exit_monitor_pins.cc; live upgrade: exit_monitor_upgrade.cc).
// Not for use outside bpf/.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpf/exit_monitor.h"
#include "bpf/exit_monitor_abi.h"

namespace bpf {

// Pinned last in a version directory: its presence means the set is complete.
inline constexpr char kExitLink[] = "exit_link";

// An exit record as the program stored it, with containerd's wall-clock time.
ExitRecord ToRecord(const em_exit& e);
absl::StatusOr<em_stats> ReadStats(int stats_fd);

// A failed bpf(2) or libbpf call: permission errors say which capabilities
// are missing; libbpf_log (its warnings during the call) is quoted.
absl::Status BpfError(std::string_view what, int err, std::string_view libbpf_log = {});

bool Exists(const std::string& path);
// Removes a version directory whole (renamed aside first), so that nobody
// ever sees half of one.
absl::Status RemoveVersionDir(const std::string& instance_dir, const std::string& dir);

}  // namespace bpf
