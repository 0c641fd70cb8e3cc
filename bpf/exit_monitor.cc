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
#include "base/errno_status.h"
#include "bpf/bpffs.h"
#include "bpf/exit_monitor.skel.h"
#include "bpf/exit_monitor_abi.h"
#include "bpf/pidfd.h"

namespace bpf {
namespace {

constexpr char kVmlinuxBtf[] = "/sys/kernel/btf/vmlinux";
constexpr char kExitLink[] = "exit_link";  // pinned last: its presence means complete
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

absl::Status BpfError(std::string_view what, int err, const LibbpfCapture* log = nullptr) {
  if (err == EPERM || err == EACCES) {
    return absl::PermissionDeniedError(fmt::format("{}: {}: {}", what, std::strerror(err),
                                                   kPrivilegeHint));
  }
  absl::Status s = base::ErrnoStatus(what, err);
  if (log && !log->text().empty()) {
    return absl::Status(s.code(), fmt::format("{}; libbpf said:\n{}", std::string(s.message()), log->text()));
  }
  return s;
}

// --- records ----------------------------------------------------------------

int64_t Nanos(clockid_t clock) {
  timespec ts;
  ::clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

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

absl::StatusOr<em_stats> ReadStats(int stats_fd) {
  uint32_t zero = 0;
  em_stats s{};
  if (bpf_map_lookup_elem(stats_fd, &zero, &s) != 0) return base::ErrnoStatus("read stats map");
  return s;
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
  if (!skel) return BpfError("open BPF object", errno, &log);
  bpf_program__set_autoload(
      *group_dead ? skel->progs.exit_signal_live : skel->progs.exit_group_dead_arg, false);
  if (int err = exit_monitor_bpf__load(skel.get()); err != 0) {
    return BpfError("load exit monitor BPF program", -err, &log);
  }
  if (int err = exit_monitor_bpf__attach(skel.get()); err != 0) {
    return BpfError("attach to sched_process_exit/sched_process_fork", -err, &log);
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
      return BpfError(fmt::format("pin {}", path), -err, &log);
    }
  }
  const std::pair<bpf_link*, const char*> links[] = {{skel->links.on_fork, kForkLink},
                                                     {exit_link, kExitLink}};
  for (auto [link, name] : links) {
    std::string path = fmt::format("{}/{}", tmp, name);
    if (int err = bpf_link__pin(link, path.c_str()); err != 0) {
      return BpfError(fmt::format("pin {}", path), -err, &log);
    }
  }
  if (::rename(tmp.c_str(), pin_dir.c_str()) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) return absl::OkStatus();  // another loader won
    return base::ErrnoStatus(fmt::format("rename {} to {}", tmp, pin_dir));
  }
  return absl::OkStatus();
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

// Removes what processes that died while pinning or unpinning left behind:
// a dead loader's directory still holds an attached program.
void SweepDebris(const std::string& instance_dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(instance_dir.c_str()), &::closedir);
  if (!d) return;
  std::vector<std::string> dead;
  while (dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    std::string_view rest;
    if (name.starts_with(kLoadingPrefix)) rest = name.substr(kLoadingPrefix.size());
    if (name.starts_with(kRemovingPrefix)) rest = name.substr(kRemovingPrefix.size());
    pid_t owner = 0;
    std::from_chars(rest.data(), rest.data() + rest.size(), owner);
    if (owner > 0 && ::kill(owner, 0) != 0 && errno == ESRCH) {
      dead.push_back(fmt::format("{}/{}", instance_dir, name));
    }
  }
  for (const std::string& path : dead) (void)RemoveTree(path);
}

bool IsVersionName(std::string_view name) {
  return !name.empty() && name[0] != '.' && !name.starts_with(kLoadingPrefix) &&
         !name.starts_with(kRemovingPrefix);
}

// The version directories under instance_dir, but `except`.
std::vector<std::string> VersionsIn(const std::string& instance_dir, std::string_view except) {
  std::vector<std::string> out;
  if (std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(instance_dir.c_str()), &::closedir); d) {
    while (dirent* e = ::readdir(d.get())) {
      if (e->d_type == DT_DIR && IsVersionName(e->d_name) && e->d_name != except) {
        out.push_back(e->d_name);
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

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

int ExitCode(int wait_status) {
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WEXITSTATUS(wait_status);
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

void ExitMonitor::RingDeleter::operator()(ring_buffer* rb) const { ring_buffer__free(rb); }

ExitMonitor::ExitMonitor(std::string instance_dir, std::string version, bool reopened)
    : instance_dir_(std::move(instance_dir)),
      version_(std::move(version)),
      pin_dir_(fmt::format("{}/{}", instance_dir_, version_)),
      reopened_(reopened) {}

ExitMonitor::~ExitMonitor() = default;

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
  if (std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(instance_dir.c_str()), &::closedir); d) {
    while (dirent* e = ::readdir(d.get())) {
      if (IsVersionName(e->d_name)) versions.push_back(fmt::format("{}/{}", instance_dir, e->d_name));
    }
  }
  // Each version goes away whole, so a concurrent Open never sees half of one.
  for (const std::string& dir : versions) {
    if (auto s = RemoveVersionDir(instance_dir, dir); !s.ok()) return s;
  }
  return RemoveTree(instance_dir);
}

absl::StatusOr<ExitRecord> ExitMonitor::LookupExited(const std::string& instance_dir, pid_t pid) {
  // This version first, then any other a previous build left pinned.
  std::vector<std::string> dirs = {fmt::format("{}/{}", instance_dir, Version())};
  if (std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(instance_dir.c_str()), &::closedir); d) {
    while (dirent* e = ::readdir(d.get())) {
      if (IsVersionName(e->d_name) && e->d_name != Version()) {
        dirs.push_back(fmt::format("{}/{}", instance_dir, e->d_name));
      }
    }
  }
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
