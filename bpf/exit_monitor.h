// ExitMonitor: learns the exits of processes the shim is not the parent of,
// from a pinned eBPF program (bpf/exit_monitor.bpf.c). It knows pids and
// wait statuses, not containers. Single-threaded: drive it from one loop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

struct ring_buffer;  // libbpf
struct em_exit;      // bpf/exit_monitor_abi.h

namespace bpf {

struct ExitRecord {
  pid_t pid = 0;
  int wait_status = 0;          // what wait(2) would have returned
  uint64_t start_boottime = 0;  // ns since boot, exact
  uint64_t exit_boottime = 0;   // ns since boot
  int64_t exited_at_ns = 0;     // CLOCK_REALTIME ns, for containerd's exited_at
};

struct ExitMonitorStats {
  std::string version;      // this monitor's pinned version (its pin directory's name)
  bool pinned = false;      // the program stays attached without us
  bool reopened = false;    // found pinned at Open rather than loaded
  size_t tracked = 0;       // entries in the tracked map
  size_t pending_exits = 0; // records in the exited map not yet Forget()-ed
  uint64_t ringbuf_full = 0;  // events dropped (their records are in the map)
  uint64_t exited_full = 0;   // records not stored (event was the only copy)
  uint64_t tracked_full = 0;  // descendants of a spawner not tracked
  // Live upgrade (see Open): the versions whose pins this monitor took over
  // at Open, and what it moved out of them.
  std::vector<std::string> upgraded_from;
  size_t upgrade_moved_tracked = 0;
  size_t upgrade_moved_exits = 0;
  // Other versions still pinned beside this one: normally none. One stays
  // only when taking it over could not finish (upgrade_error says why); it
  // keeps working, and the next Open tries again.
  std::vector<std::string> other_versions;
  std::string upgrade_error;
};

// Routes libbpf's messages (by default it prints to stderr) to `sink`;
// without a sink they are dropped, except that load errors quote them.
void SetLibbpfLogSink(std::function<void(std::string_view)> sink);

// Which sched_process_exit program to load. kAuto asks the kernel's BTF;
// forcing kSignalLive lets tests cover pre-6.16 kernels on a newer one.
// Only a fresh load looks at it; a reopen keeps what is pinned.
enum class ExitFlavour { kAuto, kGroupDeadArg, kSignalLive };

// Points in a live upgrade where a test may make processes exit.
enum class UpgradeStep {
  kBegin,          // both programs attached, nothing moved yet (pid 0)
  kTrackedCopied,  // pid's entry copied into ours, still in the old map
};

struct OpenOptions {
  ExitFlavour flavour = ExitFlavour::kAuto;
  // Test only: pin under this version instead of Version(), so that one
  // binary can play an older and a newer version of the program.
  std::string version_override;
  // Test only: called at each UpgradeStep while Open takes a version over.
  std::function<void(UpgradeStep, pid_t)> upgrade_hook;
};

class ExitMonitor {
 public:
  using ExitCallback = std::function<void(const ExitRecord&)>;

  // Descendants a spawner may add before inheritance stops.
  static constexpr int kDefaultSpawnBudget = 32;

  // Reopens the pins under instance_dir (e.g.
  // /sys/fs/bpf/containerd-shim-embed-v1/<instance>) if this program version
  // is pinned there, else loads, attaches and pins it. Mounts bpffs on
  // /sys/fs/bpf if needed.
  //
  // Live upgrade: any other version pinned there (a previous build) is taken
  // over, without missing an exit: its tracked processes are moved into ours,
  // then its recorded exits, and its pins are removed. After a reopen or an
  // upgrade, call Replay(): the exits that happened meanwhile are there.
  static absl::StatusOr<std::unique_ptr<ExitMonitor>> Open(std::string instance_dir,
                                                           OpenOptions options = {});

  // Read-only lookup of a pinned exit record, loading nothing: for the short
  // lived `delete` subcommand. NotFound if there is none.
  static absl::StatusOr<ExitRecord> LookupExited(const std::string& instance_dir, pid_t pid);

  // Removes every pin under instance_dir, all versions, and the directory.
  static absl::Status RemovePins(const std::string& instance_dir);

  // Hash of the embedded BPF object.
  static const std::string& Version();
  // The version this monitor pinned: Version() unless overridden.
  const std::string& version() const { return version_; }

  ~ExitMonitor();
  ExitMonitor(const ExitMonitor&) = delete;
  ExitMonitor& operator=(const ExitMonitor&) = delete;

  // Reports the exit of `pid` (a thread group) once it is dead. start_boottime
  // (see ReadStartBoottime) tells it from a later process reusing the pid.
  // Fails, rather than missing the exit silently, when the process had
  // already exited or was exiting.
  absl::Status Track(pid_t pid, uint64_t start_boottime);
  absl::Status Track(pid_t pid);  // reads the start time from /proc

  // Like Track, and every process the spawner or its tracked descendants
  // fork is tracked too, up to max_descendants in all, while the spawner
  // itself is tracked. Untrack the descendants you do not need.
  absl::Status TrackSpawner(pid_t pid, uint64_t start_boottime,
                            int max_descendants = kDefaultSpawnBudget);
  absl::Status TrackSpawner(pid_t pid, int max_descendants = kDefaultSpawnBudget);

  // Stops tracking; NotFound if not tracked (perhaps it already exited).
  absl::Status Untrack(pid_t pid);

  // Readable (EPOLLIN) when exits wait to be drained.
  int fd() const { return events_.get(); }

  // Hands each new exit to `cb`, once per monitor lifetime even when the
  // ring buffer repeats itself. Returns how many it delivered.
  absl::StatusOr<size_t> Drain(const ExitCallback& cb);

  // Records in the exited map not delivered yet: after a reopen, the exits
  // that happened while no monitor ran.
  absl::StatusOr<std::vector<ExitRecord>> Replay();

  // Deletes the exited record of `pid` once the caller has persisted it.
  absl::Status Forget(pid_t pid);

  absl::StatusOr<ExitMonitorStats> Stats() const;

  // Removes this version's pins so nothing is left behind; the program stays
  // attached until the monitor is destroyed.
  absl::Status Unpin();

  const std::string& pin_dir() const { return pin_dir_; }

 private:
  struct RingDeleter {
    void operator()(ring_buffer* rb) const;
  };
  using Key = std::pair<pid_t, uint64_t>;  // pid, start_boottime
  enum : uint8_t {
    kPending = 1,          // delivered, not yet forgotten
    kRingOutstanding = 2,  // delivered from the map; the ring copy may follow
  };

  ExitMonitor(std::string instance_dir, std::string version, bool reopened);
  absl::Status OpenPins();
  absl::Status TakeOver(const std::string& old_version);
  absl::Status MoveTracked(int old_tracked);
  absl::StatusOr<bool> AdoptExit(const em_exit& e);
  absl::Status Insert(pid_t pid, uint64_t start_boottime, pid_t spawner, int budget);
  absl::StatusOr<std::vector<ExitRecord>> ScanExited();
  static int OnRingEvent(void* ctx, void* data, size_t size);
  void OnEvent(const void* data, size_t size);

  std::string instance_dir_;
  std::string version_;
  std::string pin_dir_;
  bool reopened_;
  base::UniqueFd tracked_, exited_, events_, stats_, exit_link_, fork_link_;
  std::unique_ptr<ring_buffer, RingDeleter> ring_;
  absl::flat_hash_map<Key, uint8_t> seen_;
  uint64_t ringbuf_full_seen_ = 0;
  const ExitCallback* draining_ = nullptr;  // set only inside Drain
  size_t delivered_ = 0;

  // Exits moved in from an older version: no event of ours will repeat them.
  absl::flat_hash_set<Key> no_ring_;
  // Exits an older version had only in its ring buffer that our map could
  // not hold either; the next Replay() hands them out.
  std::vector<ExitRecord> carried_;
  std::vector<std::string> upgraded_from_;
  size_t moved_tracked_ = 0, moved_exits_ = 0;
  std::string upgrade_error_;
  std::function<void(UpgradeStep, pid_t)> upgrade_hook_;  // only during Open
};

}  // namespace bpf
