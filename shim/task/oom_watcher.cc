#include "shim/task/oom_watcher.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "base/read_file.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "shim/oci/spec.h"
#include "shim/task/cgroup_metrics.h"

namespace shim {

namespace {

// The v1 notification comes before the kernel kills: read the count again
// after these, for a victim that is not the init (the init's own exit
// reads it anyway, before its TaskExit).
constexpr absl::Duration kV1Rechecks[] = {absl::Milliseconds(10), absl::Milliseconds(100),
                                          absl::Seconds(1)};

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::optional<uint64_t> ParseOomKills(std::string_view text) {
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    constexpr std::string_view kKey = "oom_kill ";
    if (line.substr(0, kKey.size()) != kKey) continue;
    line.remove_prefix(kKey.size());
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), n);
    if (ec != std::errc() || end != line.data() + line.size()) return std::nullopt;
    return n;
  }
  return std::nullopt;
}

struct OomWatcher::Entry {
  uint64_t serial = 0;
  std::string dir;  // the memory cgroup
  bool v1 = false;
  base::UniqueFd eventfd;  // v1: registered for memory.oom_control
  int wd = -1;             // v2: the inotify watch of memory.events
  // v1: the reads after the last notification (a storm of them keeps three).
  std::vector<base::EventLoop::TimerId> rechecks;
};

OomWatcher::OomWatcher(base::EventLoop& loop, std::string proc_root, std::string cgroup_root)
    : loop_(loop), proc_root_(std::move(proc_root)), cgroup_root_(std::move(cgroup_root)) {}

OomWatcher::~OomWatcher() {
  while (!watches_.empty()) {
    Key key = watches_.begin()->first;
    Unwatch(key.first, key.second);
  }
  if (inotify_) loop_.Remove(inotify_.get());
}

absl::StatusOr<std::pair<std::string, bool>> OomWatcher::FindCgroup(
    const embedshim::ContainerRecord& c) {
  if (c.pid() != 0) {
    auto same = bpf::IsSameLiveProcess(static_cast<pid_t>(c.pid()), c.start_boottime());
    if (same.ok() && *same) {
      auto dir = MemoryCgroupOf(static_cast<pid_t>(c.pid()), proc_root_, cgroup_root_);
      if (dir.ok()) return std::make_pair(dir->path, dir->v1);
    }
  }
  // The init is gone (it died while no server ran, perhaps of the very OOM
  // to report); its cgroup stays until `runc delete`. runc puts an absolute
  // cgroupsPath under each hierarchy's root.
  const std::string config = c.bundle() + "/config.json";
  auto text = base::ReadFile(config);
  if (!text.ok()) return text.status();
  std::optional<std::string> path = oci::SpecCgroupsPath(*text);
  if (!path || (*path)[0] != '/' || path->find(':') != std::string::npos)
    return absl::NotFoundError(fmt::format(
        "the init is gone, and {} has no absolute cgroupsPath to find its cgroup by", config));
  if (std::string v1 = cgroup_root_ + "/memory" + *path; IsDir(v1)) return std::make_pair(v1, true);
  if (std::string v2 = UnifiedRoot(cgroup_root_) + *path; IsDir(v2))
    return std::make_pair(v2, false);
  return absl::NotFoundError(fmt::format("cgroup {} (from {}) does not exist", *path, config));
}

absl::Status OomWatcher::Watch(const embedshim::ContainerRecord& c) {
  Unwatch(c.namespace_(), c.id());
  auto found = FindCgroup(c);
  if (!found.ok()) return found.status();
  auto w = std::make_unique<Entry>();
  w->serial = next_serial_++;
  w->dir = found->first;
  w->v1 = found->second;
  Key key{c.namespace_(), c.id()};
  if (absl::Status st = w->v1 ? ArmV1(*w) : ArmV2(*w); !st.ok()) return st;
  if (w->v1) {
    absl::Status st = loop_.Add(w->eventfd.get(), EPOLLIN,
                                [this, key, serial = w->serial](uint32_t) {
                                  Report(key, serial);
                                  ScheduleRechecks(key, serial);
                                });
    if (!st.ok()) return st;
  } else {
    by_wd_[w->wd].push_back(key);
  }
  base::LogFor(base::LogLevel::kDebug, c.namespace_(), c.id(), "watching OOM kills in {} (cgroup v{})",
         w->dir, w->v1 ? 1 : 2);
  watches_[key] = std::move(w);
  return absl::OkStatus();
}

absl::Status OomWatcher::ArmV1(Entry& w) {
  base::UniqueFd efd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!efd) return base::ErrnoStatus("eventfd");
  const std::string control = w.dir + "/memory.oom_control";
  base::UniqueFd oom_control(open(control.c_str(), O_RDONLY | O_CLOEXEC));
  if (!oom_control) return base::ErrnoStatus("open " + control);
  const std::string event_control = w.dir + "/cgroup.event_control";
  base::UniqueFd ctl(open(event_control.c_str(), O_WRONLY | O_CLOEXEC));
  if (!ctl) return base::ErrnoStatus("open " + event_control);
  // "<eventfd> <file>": the kernel keeps the registration until the eventfd
  // is closed (or the cgroup goes); the other two fds can go now.
  const std::string line = fmt::format("{} {}", efd.get(), oom_control.get());
  if (write(ctl.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return base::ErrnoStatus("write " + event_control);
  w.eventfd = std::move(efd);
  return absl::OkStatus();
}

absl::Status OomWatcher::ArmV2(Entry& w) {
  if (!inotify_) {
    base::UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd) return base::ErrnoStatus("inotify_init1");
    if (absl::Status st = loop_.Add(fd.get(), EPOLLIN, [this](uint32_t) { OnInotify(); });
        !st.ok())
      return st;
    inotify_ = std::move(fd);
  }
  const std::string events = w.dir + "/memory.events";
  int wd = inotify_add_watch(inotify_.get(), events.c_str(), IN_MODIFY);
  if (wd < 0) return base::ErrnoStatus("inotify_add_watch " + events);
  w.wd = wd;
  return absl::OkStatus();
}

void OomWatcher::ScheduleRechecks(const Key& key, uint64_t serial) {
  auto it = watches_.find(key);
  if (it == watches_.end() || it->second->serial != serial) return;
  Entry& w = *it->second;
  for (auto id : w.rechecks) loop_.CancelTimer(id);
  w.rechecks.clear();
  for (absl::Duration after : kV1Rechecks)
    w.rechecks.push_back(loop_.RunAfter(after, [this, key, serial] { Report(key, serial); }));
}

void OomWatcher::Unwatch(const std::string& ns, const std::string& id) {
  auto it = watches_.find(Key{ns, id});
  if (it == watches_.end()) return;
  Entry& w = *it->second;
  for (auto timer : w.rechecks) loop_.CancelTimer(timer);
  if (w.eventfd) loop_.Remove(w.eventfd.get());  // closing it ends the registration
  if (w.wd >= 0) {
    auto wd = by_wd_.find(w.wd);
    if (wd != by_wd_.end()) {
      std::erase(wd->second, it->first);
      // Two containers in one cgroup share the watch descriptor.
      if (wd->second.empty()) {
        (void)inotify_rm_watch(inotify_.get(), w.wd);
        by_wd_.erase(wd);
      }
    }
  }
  watches_.erase(it);
}

std::optional<uint64_t> OomWatcher::OomKills(const std::string& ns, const std::string& id) {
  auto it = watches_.find(Key{ns, id});
  if (it == watches_.end()) return std::nullopt;
  const Entry& w = *it->second;
  auto text = base::ReadFile(w.dir + (w.v1 ? "/memory.oom_control" : "/memory.events"));
  if (!text.ok()) return std::nullopt;  // the cgroup is gone
  return ParseOomKills(*text);
}

void OomWatcher::Report(const Key& key, uint64_t serial) {
  auto it = watches_.find(key);
  if (it == watches_.end() || it->second->serial != serial) return;  // unwatched since
  if (Entry& w = *it->second; w.eventfd) {
    uint64_t ignored;
    (void)!read(w.eventfd.get(), &ignored, sizeof ignored);  // rearms the level
  }
  std::optional<uint64_t> n = OomKills(key.first, key.second);
  if (n && on_count_) on_count_(key.first, key.second, *n);
}

void OomWatcher::OnInotify() {
  alignas(inotify_event) char buf[4096];
  std::vector<std::pair<Key, uint64_t>> changed;
  for (;;) {
    ssize_t n = read(inotify_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      auto wd = by_wd_.find(ev->wd);
      if (wd == by_wd_.end()) continue;
      if (ev->mask & IN_IGNORED) {  // the cgroup went: the kernel dropped the watch
        for (const Key& key : wd->second)
          if (auto w = watches_.find(key); w != watches_.end()) w->second->wd = -1;
        by_wd_.erase(wd);
        continue;
      }
      for (const Key& key : wd->second)
        if (auto w = watches_.find(key); w != watches_.end())
          changed.emplace_back(key, w->second->serial);
    }
  }
  // Reported after the read, so that a callback may unwatch freely.
  for (const auto& [key, serial] : changed) Report(key, serial);
}

}  // namespace shim
