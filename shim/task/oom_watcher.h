// OomWatcher: the OOM kills in every container's memory cgroup, for TaskOOM
// events, on the server's one loop (one watcher for all containers).
//
// It counts what the kernel counts, not notifications, so a restarted
// server can tell the kills it has published (ContainerRecord's
// oom_kills_reported) from new ones:
//   cgroup v1  `oom_kill N` of memory.oom_control (kernel >= 4.13), read when
//              the eventfd registered for memory.oom_control through
//              cgroup.event_control fires. That notification comes when the
//              cgroup runs out of memory, before the kernel picks and kills a
//              victim, so the count is read again a little later too.
//   cgroup v2  `oom_kill N` of memory.events, read when inotify says the file
//              changed (IN_MODIFY); the kernel counts the kill first.
// Every count goes to the OnCount callback, which may see the same count
// more than once.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "shim/process/environment.h"

namespace shim {

// The `oom_kill N` count of a memory.events (v2) or memory.oom_control (v1)
// text; nullopt when it has none (a v1 kernel before 4.13).
std::optional<uint64_t> ParseOomKills(std::string_view text);

class OomWatcher final : public process::OomWatch {
 public:
  // The cgroup of container (ns, id) has counted `oom_kills` so far.
  using OnCount =
      std::function<void(const std::string& ns, const std::string& id, uint64_t oom_kills)>;

  // `proc_root` and `cgroup_root` are /proc and /sys/fs/cgroup but for tests.
  explicit OomWatcher(base::EventLoop& loop, std::string proc_root = "/proc",
                      std::string cgroup_root = "/sys/fs/cgroup");
  ~OomWatcher() override;
  OomWatcher(const OomWatcher&) = delete;
  OomWatcher& operator=(const OomWatcher&) = delete;

  void SetOnCount(OnCount on_count) { on_count_ = std::move(on_count); }

  absl::Status Watch(const embedshim::ContainerRecord& c) override;
  void Unwatch(const std::string& ns, const std::string& id) override;
  std::optional<uint64_t> OomKills(const std::string& ns, const std::string& id) override;

  size_t watched() const { return watches_.size(); }

 private:
  using Key = std::pair<std::string, std::string>;  // (namespace, id)
  struct Entry;

  // The container's memory cgroup: its init's while that still lives, else
  // the spec's cgroupsPath (an init gone while no server ran).
  absl::StatusOr<std::pair<std::string, bool>> FindCgroup(const embedshim::ContainerRecord& c);
  absl::Status ArmV1(Entry& w);
  absl::Status ArmV2(Entry& w);
  // v1: reads the count again after the notification (replacing the reads
  // an earlier one scheduled).
  void ScheduleRechecks(const Key& key, uint64_t serial);
  void OnInotify();
  // Reads the count of `key`'s watch, if it is still watch `serial`, and
  // reports it.
  void Report(const Key& key, uint64_t serial);

  base::EventLoop& loop_;
  std::string proc_root_, cgroup_root_;
  OnCount on_count_;
  absl::flat_hash_map<Key, std::unique_ptr<Entry>> watches_;
  uint64_t next_serial_ = 1;
  // v2: one inotify fd for every memory.events; its watch descriptors.
  base::UniqueFd inotify_;
  absl::flat_hash_map<int, std::vector<Key>> by_wd_;
};

}  // namespace shim
