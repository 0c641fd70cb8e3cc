// ExitMonitor on bpffs: loading and attaching the program, pinning it under
// a version directory, reopening it, stats, and removing pins. The run-time
// half (Track, Drain, Forget) is exit_monitor.cc; taking an older version's
// pins over, exit_monitor_upgrade.cc.
#include "bpf/exit_monitor.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <tuple>

#include <fmt/format.h>

#include "absl/cleanup/cleanup.h"
#include "base/dir.h"
#include "base/errno_status.h"
#include "bpf/bpffs.h"
#include "bpf/exit_monitor.skel.h"
#include "bpf/exit_monitor_abi.h"
#include "bpf/exit_monitor_internal.h"
#include "bpf/pidfd.h"


namespace bpf {
namespace {

constexpr char kVmlinuxBtf[] = "/sys/kernel/btf/vmlinux";
constexpr char kForkLink[] = "fork_link";
// Besides version directories, an instance dir holds only these, named with
// the owner's pid: a directory being pinned, or one being removed. Both are
// renamed so that a version directory is always complete or absent.
constexpr std::string_view kLoadingPrefix = "loading_";
constexpr std::string_view kRemovingPrefix = "removing_";
constexpr char kPrivilegeHint[] =
    "needs root, or CAP_BPF + CAP_PERFMON (and CAP_SYS_ADMIN to mount bpffs); "
    "also check kernel.unprivileged_bpf_disabled and kernel lockdown";

// --- libbpf log routing -----------------------------------------------------

std::function<void(std::string_view)>* g_log_sink = nullptr;
thread_local std::string* g_log_capture = nullptr;

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof(buf), format, args);
  if (n < 0) return 0;
  std::string_view line(buf, std::min<size_t>(n, sizeof(buf) - 1));
  if (g_log_capture && level <= LIBBPF_WARN) {
    g_log_capture->append(line);
    // Only the tail matters: it holds the verifier's verdict.
    if (g_log_capture->size() > 4096) g_log_capture->erase(0, g_log_capture->size() - 4096);
  }
  if (g_log_sink) (*g_log_sink)(line);
  return n;
}

void InstallLibbpfPrint() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(&LibbpfPrint); });
}

// Collects libbpf's warnings while alive, to quote them in an error.
class LibbpfCapture {
 public:
  LibbpfCapture() { g_log_capture = &text_; }
  ~LibbpfCapture() { g_log_capture = nullptr; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

absl::StatusOr<size_t> CountEntries(int map_fd) {
  uint32_t key = 0, next;
  size_t n = 0;
  for (const void* prev = nullptr; bpf_map_get_next_key(map_fd, prev, &next) == 0; prev = &key) {
    key = next;
    ++n;
  }
  if (errno != ENOENT) return base::ErrnoStatus("iterate BPF map");
  return n;
}

// --- loading ----------------------------------------------------------------

// Linux 6.16 added group_dead to sched_process_exit; the kernel's BTF of
// the tracepoint's function type tells which signature runs here.
absl::StatusOr<bool> TracepointHasGroupDead() {
  if (::access(kVmlinuxBtf, R_OK) != 0) {
    return absl::FailedPreconditionError(fmt::format(
        "kernel BTF not found at {} ({}): the exit monitor needs a kernel built with "
        "CONFIG_DEBUG_INFO_BTF=y",
        kVmlinuxBtf, std::strerror(errno)));
  }
  std::unique_ptr<struct btf, void (*)(struct btf*)> btf(btf__load_vmlinux_btf(), &btf__free);
  if (!btf) return base::ErrnoStatus(fmt::format("parse {}", kVmlinuxBtf));
  int id = btf__find_by_name_kind(btf.get(), "btf_trace_sched_process_exit", BTF_KIND_TYPEDEF);
  if (id < 0) {
    return absl::FailedPreconditionError(
        "the kernel has no sched_process_exit tracepoint in its BTF: the exit monitor needs "
        "Linux >= 5.5 with CONFIG_TRACEPOINTS and CONFIG_DEBUG_INFO_BTF");
  }
  const btf_type* t = btf__type_by_id(btf.get(), btf__type_by_id(btf.get(), id)->type);
  if (t && btf_is_ptr(t)) t = btf__type_by_id(btf.get(), t->type);
  if (!t || !btf_is_func_proto(t)) {
    return absl::FailedPreconditionError("btf_trace_sched_process_exit is not a function pointer");
  }
  // (void *data, struct task_struct *p[, bool group_dead])
  return btf_vlen(t) >= 3;
}

// Loads, attaches and pins the program into pin_dir. Pins go to a private
// directory first and are renamed into place, so pin_dir is either complete
// or absent, and of two concurrent loaders exactly one wins.
absl::Status LoadAndPin(const std::string& instance_dir, const std::string& pin_dir,
                        ExitFlavour flavour) {
  absl::StatusOr<bool> group_dead = flavour == ExitFlavour::kGroupDeadArg;
  if (flavour == ExitFlavour::kAuto) group_dead = TracepointHasGroupDead();
  if (!group_dead.ok()) return group_dead.status();

  // bpffs refuses names with a dot in them.
  std::string tmp = fmt::format("{}/{}{}", instance_dir, kLoadingPrefix, ::getpid());
  if (auto s = RemoveTree(tmp); !s.ok()) return s;
  if (::mkdir(tmp.c_str(), 0700) != 0) return base::ErrnoStatus(fmt::format("mkdir {}", tmp));
  absl::Cleanup remove_tmp = [&tmp] { (void)RemoveTree(tmp); };

  LibbpfCapture log;
  std::unique_ptr<exit_monitor_bpf, void (*)(exit_monitor_bpf*)> skel(exit_monitor_bpf__open(),
                                                                       &exit_monitor_bpf__destroy);
  if (!skel) return BpfError("open BPF object", errno, log.text());
  bpf_program__set_autoload(
      *group_dead ? skel->progs.exit_signal_live : skel->progs.exit_group_dead_arg, false);
  if (int err = exit_monitor_bpf__load(skel.get()); err != 0) {
    return BpfError("load exit monitor BPF program", -err, log.text());
  }
  if (int err = exit_monitor_bpf__attach(skel.get()); err != 0) {
    return BpfError("attach to sched_process_exit/sched_process_fork", -err, log.text());
  }
  bpf_link* exit_link =
      *group_dead ? skel->links.exit_group_dead_arg : skel->links.exit_signal_live;

  const std::pair<bpf_map*, const char*> maps[] = {{skel->maps.tracked, "tracked"},
                                                   {skel->maps.exited, "exited"},
                                                   {skel->maps.events, "events"},
                                                   {skel->maps.stats, "stats"}};
  for (auto [map, name] : maps) {
    std::string path = fmt::format("{}/{}", tmp, name);
    if (int err = bpf_map__pin(map, path.c_str()); err != 0) {
      return BpfError(fmt::format("pin {}", path), -err, log.text());
    }
  }
  const std::pair<bpf_link*, const char*> links[] = {{skel->links.on_fork, kForkLink},
                                                     {exit_link, kExitLink}};
  for (auto [link, name] : links) {
    std::string path = fmt::format("{}/{}", tmp, name);
    if (int err = bpf_link__pin(link, path.c_str()); err != 0) {
      return BpfError(fmt::format("pin {}", path), -err, log.text());
    }
  }
  if (::rename(tmp.c_str(), pin_dir.c_str()) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) return absl::OkStatus();  // another loader won
    return base::ErrnoStatus(fmt::format("rename {} to {}", tmp, pin_dir));
  }
  return absl::OkStatus();
}

// Removes what processes that died while pinning or unpinning left behind:
// a dead loader's directory still holds an attached program.
void SweepDebris(const std::string& instance_dir) {
  std::vector<std::string> dead;
  base::ForEachEntry(instance_dir, [&](const dirent& e) {
    std::string_view name = e.d_name;
    std::string_view rest;
    if (name.starts_with(kLoadingPrefix)) rest = name.substr(kLoadingPrefix.size());
    if (name.starts_with(kRemovingPrefix)) rest = name.substr(kRemovingPrefix.size());
    pid_t owner = 0;
    std::from_chars(rest.data(), rest.data() + rest.size(), owner);
    if (owner > 0 && ::kill(owner, 0) != 0 && errno == ESRCH) {
      dead.push_back(fmt::format("{}/{}", instance_dir, name));
    }
  });
  for (const std::string& path : dead) (void)RemoveTree(path);
}

bool IsVersionName(std::string_view name) {
  return !name.empty() && name[0] != '.' && !name.starts_with(kLoadingPrefix) &&
         !name.starts_with(kRemovingPrefix);
}

// The version directories under instance_dir, but `except`.
std::vector<std::string> VersionsIn(const std::string& instance_dir, std::string_view except) {
  std::vector<std::string> out;
  base::ForEachEntry(instance_dir, [&](const dirent& e) {
    if (e.d_type == DT_DIR && IsVersionName(e.d_name) && e.d_name != except) {
      out.push_back(e.d_name);
    }
  });
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

absl::Status BpfError(std::string_view what, int err, std::string_view libbpf_log) {
  if (err == EPERM || err == EACCES) {
    return absl::PermissionDeniedError(fmt::format("{}: {}: {}", what, std::strerror(err),
                                                   kPrivilegeHint));
  }
  absl::Status s = base::ErrnoStatus(what, err);
  if (!libbpf_log.empty()) {
    return absl::Status(s.code(), fmt::format("{}; libbpf said:\n{}", std::string(s.message()), libbpf_log));
  }
  return s;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

absl::Status RemoveVersionDir(const std::string& instance_dir, const std::string& dir) {
  static int serial = 0;
  std::string doomed =
      fmt::format("{}/{}{}_{}", instance_dir, kRemovingPrefix, ::getpid(), serial++);
  if (::rename(dir.c_str(), doomed.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoStatus(fmt::format("rename {} to {}", dir, doomed));
  }
  return RemoveTree(doomed);
}

void SetLibbpfLogSink(std::function<void(std::string_view)> sink) {
  InstallLibbpfPrint();
  static std::function<void(std::string_view)> stored;
  stored = std::move(sink);
  g_log_sink = stored ? &stored : nullptr;
}

const std::string& ExitMonitor::Version() {
  static const std::string version = [] {
    size_t size = 0;
    auto* p = static_cast<const unsigned char*>(exit_monitor_bpf__elf_bytes(&size));
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: any change to the object renames the pins
    for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return fmt::format("{:016x}", h);
  }();
  return version;
}

absl::StatusOr<std::unique_ptr<ExitMonitor>> ExitMonitor::Open(std::string instance_dir,
                                                                OpenOptions options) {
  InstallLibbpfPrint();
  while (instance_dir.size() > 1 && instance_dir.back() == '/') instance_dir.pop_back();
  if (auto s = EnsureBpffsMounted(); !s.ok()) return s;
  if (auto s = MakeDirs(instance_dir, 0700); !s.ok()) return s;
  if (!IsBpffs(instance_dir)) {
    return absl::InvalidArgumentError(
        fmt::format("{} is not on a bpffs: pins must live under {}", instance_dir, kBpffsRoot));
  }
  SweepDebris(instance_dir);
  std::string version = options.version_override.empty() ? Version() : options.version_override;
  if (!IsVersionName(version) || version.find_first_of("/.") != std::string::npos) {
    return absl::InvalidArgumentError(fmt::format("bad version name {:?}", version));
  }
  std::string pin_dir = fmt::format("{}/{}", instance_dir, version);
  bool reopened = Exists(pin_dir);
  if (reopened && !Exists(fmt::format("{}/{}", pin_dir, kExitLink))) {
    // We never leave one like that (see kLoadingPrefix): someone else did.
    return absl::FailedPreconditionError(fmt::format(
        "{} lacks {}: not a complete set of pins; remove it (ExitMonitor::RemovePins)", pin_dir,
        kExitLink));
  }
  if (!reopened) {
    if (auto s = LoadAndPin(instance_dir, pin_dir, options.flavour); !s.ok()) return s;
    // Loading parsed the kernel's BTF (MBs of heap); give it back, the
    // monitor lives as long as the shim.
    ::malloc_trim(0);
  }
  // Both paths end here: the monitor only ever holds fds from bpf_obj_get.
  std::unique_ptr<ExitMonitor> m(new ExitMonitor(std::move(instance_dir), version, reopened));
  if (auto s = m->OpenPins(); !s.ok()) return s;

  // Live upgrade. Also after a reopen: a previous Open may have died halfway
  // through, and every step can be done again.
  m->upgrade_hook_ = std::move(options.upgrade_hook);
  for (const std::string& old : VersionsIn(m->instance_dir_, version)) {
    absl::Status s = m->TakeOver(old);
    if (s.ok()) continue;
    // Our maps are full: the old version goes on working beside ours.
    if (!absl::IsResourceExhausted(s)) return s;
    m->upgrade_error_ = s.ToString();
  }
  m->upgrade_hook_ = nullptr;
  return m;
}

absl::Status ExitMonitor::OpenPins() {
  const std::pair<const char*, base::UniqueFd*> pins[] = {
      {"tracked", &tracked_}, {"exited", &exited_},    {"events", &events_},
      {"stats", &stats_},     {kExitLink, &exit_link_}, {kForkLink, &fork_link_}};
  for (auto [name, fd] : pins) {
    std::string path = fmt::format("{}/{}", pin_dir_, name);
    fd->Reset(bpf_obj_get(path.c_str()));
    if (!fd->valid()) return BpfError(fmt::format("open pin {}", path), errno);
  }
  ring_.reset(ring_buffer__new(events_.get(), &ExitMonitor::OnRingEvent, this, nullptr));
  if (!ring_) return BpfError("map exit event ring buffer", errno);
  // Drops that predate us are covered by Replay().
  auto stats = ReadStats(stats_.get());
  if (!stats.ok()) return stats.status();
  ringbuf_full_seen_ = stats->ringbuf_full;
  return absl::OkStatus();
}

absl::StatusOr<ExitMonitorStats> ExitMonitor::Stats() const {
  ExitMonitorStats out;
  out.version = version_;
  out.pinned = Exists(fmt::format("{}/{}", pin_dir_, kExitLink));
  out.reopened = reopened_;
  auto tracked = CountEntries(tracked_.get());
  if (!tracked.ok()) return tracked.status();
  out.tracked = *tracked;
  auto pending = CountEntries(exited_.get());
  if (!pending.ok()) return pending.status();
  out.pending_exits = *pending;
  auto counters = ReadStats(stats_.get());
  if (!counters.ok()) return counters.status();
  out.ringbuf_full = counters->ringbuf_full;
  out.exited_full = counters->exited_full;
  out.tracked_full = counters->tracked_full;
  out.upgraded_from = upgraded_from_;
  out.upgrade_moved_tracked = moved_tracked_;
  out.upgrade_moved_exits = moved_exits_;
  out.other_versions = VersionsIn(instance_dir_, version_);
  out.upgrade_error = upgrade_error_;
  return out;
}

absl::Status ExitMonitor::Unpin() {
  if (auto s = RemoveVersionDir(instance_dir_, pin_dir_); !s.ok()) return s;
  // Other versions' pins may still live there; then it stays.
  if (::rmdir(instance_dir_.c_str()) != 0 && errno != ENOTEMPTY && errno != ENOENT) {
    return base::ErrnoStatus(fmt::format("rmdir {}", instance_dir_));
  }
  return absl::OkStatus();
}

absl::Status ExitMonitor::RemovePins(const std::string& instance_dir) {
  std::vector<std::string> versions;
  base::ForEachEntry(instance_dir, [&](const dirent& e) {
    if (IsVersionName(e.d_name)) versions.push_back(fmt::format("{}/{}", instance_dir, e.d_name));
  });
  // Each version goes away whole, so a concurrent Open never sees half of one.
  for (const std::string& dir : versions) {
    if (auto s = RemoveVersionDir(instance_dir, dir); !s.ok()) return s;
  }
  return RemoveTree(instance_dir);
}

absl::StatusOr<ExitRecord> ExitMonitor::LookupExited(const std::string& instance_dir, pid_t pid) {
  // This version first, then any other a previous build left pinned.
  std::vector<std::string> dirs = {fmt::format("{}/{}", instance_dir, Version())};
  base::ForEachEntry(instance_dir, [&](const dirent& e) {
    if (IsVersionName(e.d_name) && e.d_name != Version()) {
      dirs.push_back(fmt::format("{}/{}", instance_dir, e.d_name));
    }
  });
  for (const std::string& dir : dirs) {
    std::string path = dir + "/exited";
    base::UniqueFd fd(bpf_obj_get(path.c_str()));
    if (!fd) {
      if (errno == ENOENT) continue;
      return BpfError(fmt::format("open pin {}", path), errno);
    }
    uint32_t key = pid;
    em_exit e;
    if (bpf_map_lookup_elem(fd.get(), &key, &e) == 0) return ToRecord(e);
    if (errno != ENOENT) return base::ErrnoStatus(fmt::format("look up pid {} in {}", pid, path));
  }
  return absl::NotFoundError(fmt::format("no exit recorded for pid {} under {}", pid, instance_dir));
}

}  // namespace bpf
