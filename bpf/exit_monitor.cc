// ExitMonitor at run time: tracking pids, draining exit events, forgetting
// delivered records. Loading, pinning and live upgrade are in
// exit_monitor_pins.cc.
#include "bpf/exit_monitor.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/errno_status.h"
#include "bpf/exit_monitor_abi.h"
#include "bpf/exit_monitor_internal.h"
#include "bpf/pidfd.h"

namespace bpf {
namespace {

int64_t Nanos(clockid_t clock) {
  timespec ts;
  ::clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

ExitRecord ToRecord(const em_exit& e) {
  // The kernel stamps boot time, which suspend cannot skew; containerd
  // wants wall-clock time.
  int64_t boot_to_real = Nanos(CLOCK_REALTIME) - Nanos(CLOCK_BOOTTIME);
  return ExitRecord{
      .pid = static_cast<pid_t>(e.pid),
      .wait_status = static_cast<int>(e.status),
      .start_boottime = e.start_boottime,
      .exit_boottime = e.exit_boottime,
      .exited_at_ns = static_cast<int64_t>(e.exit_boottime) + boot_to_real,
  };
}

absl::StatusOr<em_stats> ReadStats(int stats_fd) {
  uint32_t zero = 0;
  em_stats s{};
  if (bpf_map_lookup_elem(stats_fd, &zero, &s) != 0) return base::ErrnoStatus("read stats map");
  return s;
}

void ExitMonitor::RingDeleter::operator()(ring_buffer* rb) const { ring_buffer__free(rb); }

ExitMonitor::ExitMonitor(std::string instance_dir, std::string version, bool reopened)
    : instance_dir_(std::move(instance_dir)),
      version_(std::move(version)),
      pin_dir_(fmt::format("{}/{}", instance_dir_, version_)),
      reopened_(reopened) {}

ExitMonitor::~ExitMonitor() = default;

absl::Status ExitMonitor::Insert(pid_t pid, uint64_t start_boottime, pid_t spawner, int budget) {
  if (pid <= 0) return absl::InvalidArgumentError(fmt::format("bad pid {}", pid));
  uint32_t key = pid;
  em_tracked value{.start_boottime = start_boottime,
                   .spawner = static_cast<uint32_t>(spawner),
                   .budget = budget};
  if (bpf_map_update_elem(tracked_.get(), &key, &value, BPF_ANY) != 0) {
    if (errno == E2BIG) {
      return absl::ResourceExhaustedError(
          fmt::format("track pid {}: tracked map full ({} entries)", pid, EM_MAX_TRACKED));
    }
    return base::ErrnoStatus(fmt::format("track pid {}", pid));
  }
  // The process may have died before the entry existed; then nobody would
  // ever report it. Say so instead.
  auto state = ProbeProcess(pid, start_boottime);
  if (!state.ok()) return state.status();
  if (*state == ProcessState::kRunning) return absl::OkStatus();
  if (bpf_map_delete_elem(tracked_.get(), &key) != 0 && errno == ENOENT) {
    return absl::OkStatus();  // the program saw the exit after all: it is reported
  }
  return absl::FailedPreconditionError(fmt::format(
      "pid {} {} before it was tracked: its exit status cannot be observed", pid,
      *state == ProcessState::kGone ? "had exited (or is another process)" : "was already exiting"));
}

absl::Status ExitMonitor::Track(pid_t pid, uint64_t start_boottime) {
  return Insert(pid, start_boottime, 0, 0);
}

absl::Status ExitMonitor::Track(pid_t pid) {
  auto start = ReadStartBoottime(pid);
  if (!start.ok()) return start.status();
  return Track(pid, *start);
}

absl::Status ExitMonitor::TrackSpawner(pid_t pid, uint64_t start_boottime, int max_descendants) {
  return Insert(pid, start_boottime, pid, max_descendants);
}

absl::Status ExitMonitor::TrackSpawner(pid_t pid, int max_descendants) {
  auto start = ReadStartBoottime(pid);
  if (!start.ok()) return start.status();
  return TrackSpawner(pid, *start, max_descendants);
}

absl::Status ExitMonitor::Untrack(pid_t pid) {
  uint32_t key = pid;
  if (bpf_map_delete_elem(tracked_.get(), &key) != 0) {
    return base::ErrnoStatus(fmt::format("untrack pid {}", pid));
  }
  return absl::OkStatus();
}

int ExitMonitor::OnRingEvent(void* ctx, void* data, size_t size) {
  static_cast<ExitMonitor*>(ctx)->OnEvent(data, size);
  return 0;
}

void ExitMonitor::OnEvent(const void* data, size_t size) {
  em_exit e;
  if (size < sizeof(e)) return;
  std::memcpy(&e, data, sizeof(e));
  // An event whose record was stored may be a repeat of one a map scan
  // delivered; an unstored one has no other copy and cannot repeat.
  if (!(e.flags & EM_EXIT_NOT_STORED)) {
    if (!no_ring_.empty()) no_ring_.erase(Key{e.pid, e.start_boottime});  // we saw it too
    auto [it, inserted] = seen_.try_emplace(Key{e.pid, e.start_boottime}, kPending);
    if (!inserted) {
      it->second &= ~kRingOutstanding;
      if (it->second == 0) seen_.erase(it);
      return;
    }
  }
  ++delivered_;
  (*draining_)(ToRecord(e));
}

absl::StatusOr<size_t> ExitMonitor::Drain(const ExitCallback& cb) {
  draining_ = &cb;
  delivered_ = 0;
  int n = ring_buffer__consume(ring_.get());
  draining_ = nullptr;
  if (n < 0) return base::ErrnoStatus("consume exit events", -n);

  // A full ring buffer drops events but not records: catch up from the map.
  auto stats = ReadStats(stats_.get());
  if (!stats.ok()) return stats.status();
  if (stats->ringbuf_full != ringbuf_full_seen_) {
    ringbuf_full_seen_ = stats->ringbuf_full;
    auto records = ScanExited();
    if (!records.ok()) return records.status();
    for (const ExitRecord& r : *records) {
      ++delivered_;
      cb(r);
    }
  }
  return delivered_;
}

absl::StatusOr<std::vector<ExitRecord>> ExitMonitor::ScanExited() {
  std::vector<ExitRecord> out;
  uint32_t key = 0, next;
  for (const void* prev = nullptr; bpf_map_get_next_key(exited_.get(), prev, &next) == 0;
       prev = &key) {
    key = next;
    em_exit e;
    if (bpf_map_lookup_elem(exited_.get(), &key, &e) != 0) continue;  // forgotten meanwhile
    // Not delivered yet: the ring buffer may still hold its event, unless
    // the record came from an older version.
    Key k{e.pid, e.start_boottime};
    uint8_t state = no_ring_.erase(k) ? kPending : kPending | kRingOutstanding;
    if (seen_.try_emplace(k, state).second) out.push_back(ToRecord(e));
  }
  if (errno != ENOENT) return base::ErrnoStatus("iterate exited map");
  return out;
}

absl::StatusOr<std::vector<ExitRecord>> ExitMonitor::Replay() {
  auto out = ScanExited();
  if (!out.ok()) return out;
  out->insert(out->end(), carried_.begin(), carried_.end());
  carried_.clear();
  return out;
}

absl::Status ExitMonitor::Forget(pid_t pid) {
  uint32_t key = pid;
  em_exit e;
  if (bpf_map_lookup_elem(exited_.get(), &key, &e) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoStatus(fmt::format("look up exit of pid {}", pid));
  }
  if (bpf_map_delete_elem(exited_.get(), &key) != 0 && errno != ENOENT) {
    return base::ErrnoStatus(fmt::format("forget exit of pid {}", pid));
  }
  no_ring_.erase(Key{pid, e.start_boottime});
  // Keep the key only while its ring event may still come.
  if (auto it = seen_.find(Key{pid, e.start_boottime}); it != seen_.end()) {
    it->second &= ~kPending;
    if (it->second == 0) seen_.erase(it);
  }
  return absl::OkStatus();
}

}  // namespace bpf
