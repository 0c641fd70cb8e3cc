// ExitMonitor's live upgrade: taking over the pins an older build left, in
// an order that loses no exit. Open (exit_monitor_pins.cc) calls TakeOver
// for each other version it finds.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <tuple>

#include <fmt/format.h>

#include "base/errno_status.h"
#include "bpf/exit_monitor.h"
#include "bpf/exit_monitor_abi.h"
#include "bpf/exit_monitor_internal.h"
#include "bpf/pidfd.h"

namespace bpf {
namespace {

// The keys of a map with u32 keys. Programs delete entries meanwhile, which
// may restart the walk: the cap ends it, and callers look again anyway.
absl::StatusOr<std::vector<uint32_t>> Keys(int map_fd, size_t max_entries) {
  std::vector<uint32_t> keys;
  uint32_t key = 0, next;
  for (const void* prev = nullptr;
       keys.size() < 2 * max_entries && bpf_map_get_next_key(map_fd, prev, &next) == 0;
       prev = &key) {
    key = next;
    keys.push_back(key);
  }
  if (keys.size() < 2 * max_entries && errno != ENOENT) {
    return base::ErrnoStatus("iterate BPF map");
  }
  return keys;
}

// An older version's map is read as our struct: only if the sizes agree.
// A layout change must come with a conversion in TakeOver.
absl::Status CheckLayout(int map_fd, const std::string& path, uint32_t value_size) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(map_fd, &info, &len) != 0) {
    return BpfError(fmt::format("inspect {}", path), errno);
  }
  if (info.key_size != sizeof(uint32_t) || info.value_size != value_size) {
    return absl::FailedPreconditionError(fmt::format(
        "{} has {}-byte keys and {}-byte values, this build expects {} and {}: it cannot take "
        "that version over (RemovePins() would drop its exits)",
        path, info.key_size, info.value_size, sizeof(uint32_t), value_size));
  }
  return absl::OkStatus();
}

// Returns once every BPF program that was running at the call has finished.
// The kernel promises it for an update of a map-in-map: it waits for running
// programs (synchronize_rcu) so that user space knows they see the new value.
absl::Status WaitForRunningPrograms() {
  base::UniqueFd inner(bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, 4, 4, 1, nullptr));
  if (!inner) return BpfError("create barrier map", errno);
  LIBBPF_OPTS(bpf_map_create_opts, opts, .inner_map_fd = static_cast<__u32>(inner.get()));
  base::UniqueFd outer(bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, nullptr, 4, 4, 1, &opts));
  if (!outer) return BpfError("create barrier map-in-map", errno);
  uint32_t key = 0, value = inner.get();
  if (bpf_map_update_elem(outer.get(), &key, &value, BPF_ANY) != 0) {
    return BpfError("wait for running BPF programs", errno);
  }
  return absl::OkStatus();
}

}  // namespace

// Takes over an older version's pins, in an order that loses no exit:
//  1. our program is attached already (Open loaded or reopened it);
//  2. its tracked entries move into ours (MoveTracked): from then on only
//     our program can report, so the old one is detached in effect, even
//     while the old shim still holds its links;
//  3. its exited records move into ours, deduplicated by (pid, start);
//  4. its directory goes, and its program with the last fd of its links.
// The directory stays complete until 4, so a crash anywhere leaves pins that
// the next Open (of either version) takes over again.
absl::Status ExitMonitor::TakeOver(const std::string& old_version) {
  std::string dir = fmt::format("{}/{}", instance_dir_, old_version);
  if (!Exists(fmt::format("{}/{}", dir, kExitLink))) {
    if (!Exists(dir)) return absl::OkStatus();  // a racing Open took it over
    return absl::FailedPreconditionError(fmt::format(
        "{} lacks {}: not a complete set of pins; remove it (ExitMonitor::RemovePins)", dir,
        kExitLink));
  }
  base::UniqueFd old_tracked, old_exited, old_events;
  const std::pair<const char*, base::UniqueFd*> pins[] = {
      {"tracked", &old_tracked}, {"exited", &old_exited}, {"events", &old_events}};
  for (auto [name, fd] : pins) {
    std::string path = fmt::format("{}/{}", dir, name);
    fd->Reset(bpf_obj_get(path.c_str()));
    if (!fd->valid()) {
      if (errno == ENOENT && !Exists(dir)) return absl::OkStatus();  // taken over meanwhile
      return BpfError(fmt::format("open pin {}", path), errno);
    }
  }
  for (auto [fd, name, size] : {std::tuple{old_tracked.get(), "tracked", sizeof(em_tracked)},
                                 std::tuple{old_exited.get(), "exited", sizeof(em_exit)}}) {
    if (auto s = CheckLayout(fd, fmt::format("{}/{}", dir, name), size); !s.ok()) return s;
  }

  if (upgrade_hook_) upgrade_hook_(UpgradeStep::kBegin, 0);
  if (auto s = MoveTracked(old_tracked.get()); !s.ok()) return s;

  // MoveTracked ended with no old program running, so its ring buffer is
  // complete. The map is the truth; an event is the only copy when the old
  // exited map was full.
  std::vector<em_exit> unstored;
  auto on_event = [](void* ctx, void* data, size_t size) -> int {
    em_exit e;
    if (size < sizeof(e)) return 0;
    std::memcpy(&e, data, sizeof(e));
    if (e.flags & EM_EXIT_NOT_STORED) static_cast<std::vector<em_exit>*>(ctx)->push_back(e);
    return 0;
  };
  std::unique_ptr<ring_buffer, RingDeleter> old_ring(
      ring_buffer__new(old_events.get(), on_event, &unstored, nullptr));
  if (!old_ring) return BpfError(fmt::format("map {}/events", dir), errno);
  if (int n = ring_buffer__consume(old_ring.get()); n < 0) {
    return base::ErrnoStatus(fmt::format("consume {}/events", dir), -n);
  }
  for (const em_exit& e : unstored) {
    auto stored = AdoptExit(e);
    if (!stored.ok()) return stored.status();
    if (!*stored) carried_.push_back(ToRecord(e));
    ++moved_exits_;
  }

  // Insert into ours, then delete from theirs: LookupExited (which searches
  // every version) finds each record all along.
  auto keys = Keys(old_exited.get(), EM_MAX_EXITED);
  if (!keys.ok()) return keys.status();
  size_t left = 0;
  for (uint32_t pid : *keys) {
    em_exit e;
    if (bpf_map_lookup_elem(old_exited.get(), &pid, &e) != 0) {
      if (errno == ENOENT) continue;
      return base::ErrnoStatus(fmt::format("look up pid {} in {}/exited", pid, dir));
    }
    auto stored = AdoptExit(e);
    if (!stored.ok()) return stored.status();
    if (!*stored) {
      ++left;
      continue;
    }
    if (bpf_map_delete_elem(old_exited.get(), &pid) != 0 && errno != ENOENT) {
      return base::ErrnoStatus(fmt::format("delete pid {} from {}/exited", pid, dir));
    }
    ++moved_exits_;
  }
  if (left > 0) {
    return absl::ResourceExhaustedError(fmt::format(
        "{} exits recorded by version {} did not fit in {}/exited; they stay pinned in {} "
        "(LookupExited finds them) until an Open after some Forget()s moves them",
        left, old_version, pin_dir_, dir));
  }
  if (auto s = RemoveVersionDir(instance_dir_, dir); !s.ok()) return s;
  upgraded_from_.push_back(old_version);
  return absl::OkStatus();
}

// Copies each old entry into ours, then deletes it from the old map. An exit
// before the copy is reported by the old program, one between copy and
// delete by both (each deletes its own entry), one after by ours alone.
absl::Status ExitMonitor::MoveTracked(int old_tracked) {
  // A spawner in the old map may add descendants to it until it has moved
  // too; a few rounds settle that.
  constexpr int kMaxRounds = 64;
  for (int round = 0; round < kMaxRounds; ++round) {
    auto keys = Keys(old_tracked, EM_MAX_TRACKED);
    if (!keys.ok()) return keys.status();
    if (keys->empty()) {
      // An old program that was adding a descendant when we looked may still
      // insert it; once none runs, an empty map stays empty: nothing is left
      // in it to report or to inherit from.
      if (auto s = WaitForRunningPrograms(); !s.ok()) return s;
      keys = Keys(old_tracked, EM_MAX_TRACKED);
      if (!keys.ok()) return keys.status();
      if (keys->empty()) return absl::OkStatus();
    }
    for (uint32_t pid : *keys) {
      em_tracked old;
      if (bpf_map_lookup_elem(old_tracked, &pid, &old) != 0) {
        if (errno == ENOENT) continue;  // exited (reported there) or moved
        return base::ErrnoStatus(fmt::format("look up tracked pid {}", pid));
      }
      if (bpf_map_update_elem(tracked_.get(), &pid, &old, BPF_NOEXIST) == 0) {
        ++moved_tracked_;
      } else if (errno == EEXIST) {
        // Ours already (a racing Open, or tracked here). Of two processes
        // with one pid, the later start is the live one.
        em_tracked ours;
        if (bpf_map_lookup_elem(tracked_.get(), &pid, &ours) == 0 &&
            !SameStart(ours.start_boottime, old.start_boottime) &&
            ours.start_boottime < old.start_boottime &&
            bpf_map_update_elem(tracked_.get(), &pid, &old, BPF_EXIST) == 0) {
          ++moved_tracked_;
        }
      } else if (errno == E2BIG) {
        return absl::ResourceExhaustedError(fmt::format(
            "{}/tracked is full ({} entries): the older version keeps tracking the rest",
            pin_dir_, EM_MAX_TRACKED));
      } else {
        return base::ErrnoStatus(fmt::format("copy tracked pid {}", pid));
      }
      if (upgrade_hook_) upgrade_hook_(UpgradeStep::kTrackedCopied, static_cast<pid_t>(pid));
      if (bpf_map_delete_elem(old_tracked, &pid) != 0 && errno != ENOENT) {
        return base::ErrnoStatus(fmt::format("delete tracked pid {} of the older version", pid));
      }
    }
  }
  return absl::UnavailableError(fmt::format(
      "the older version's tracked map would not empty after {} rounds", kMaxRounds));
}

// Stores an exit an older version recorded in our exited map, unless ours
// holds it already. False when our map is full.
absl::StatusOr<bool> ExitMonitor::AdoptExit(const em_exit& old) {
  uint32_t pid = old.pid;
  em_exit rec = old;
  rec.flags &= ~EM_EXIT_NOT_STORED;
  Key key{old.pid, old.start_boottime};
  if (bpf_map_update_elem(exited_.get(), &pid, &rec, BPF_NOEXIST) == 0) {
    no_ring_.insert(key);
  } else if (errno == E2BIG) {
    return false;
  } else if (errno != EEXIST) {
    return base::ErrnoStatus(fmt::format("move exit of pid {}", pid));
  } else if (em_exit ours; bpf_map_lookup_elem(exited_.get(), &pid, &ours) == 0 &&
                           ours.start_boottime != old.start_boottime &&
                           ours.exit_boottime < old.exit_boottime) {
    // Two processes with one pid: like the program, the map keeps the later
    // exit. (The same start: both programs saw this exit; ours stays.)
    if (bpf_map_update_elem(exited_.get(), &pid, &rec, BPF_ANY) != 0) {
      return base::ErrnoStatus(fmt::format("move exit of pid {}", pid));
    }
    no_ring_.insert(key);
  }
  // The process is dead: an entry of ours for it was copied just as it
  // exited, and would otherwise stay forever.
  em_tracked t;
  if (bpf_map_lookup_elem(tracked_.get(), &pid, &t) == 0 &&
      SameStart(t.start_boottime, old.start_boottime)) {
    (void)bpf_map_delete_elem(tracked_.get(), &pid);  // ENOENT: ours reported it too
  }
  return true;
}

}  // namespace bpf
