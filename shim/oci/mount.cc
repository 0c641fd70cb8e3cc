#include "shim/oci/mount.h"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace shim::oci {
namespace {

// A word that sets or clears mount flags (mount(8)'s filesystem-independent
// options).
struct FlagWord {
  std::string_view word;
  bool clear;
  unsigned long flags;
};

constexpr FlagWord kFlagWords[] = {
    {"defaults", false, 0},
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},
    {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},
    {"exec", true, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
    {"mand", false, MS_MANDLOCK},
    {"nomand", true, MS_MANDLOCK},
    {"remount", false, MS_REMOUNT},
    {"bind", false, MS_BIND},
    {"rbind", false, MS_BIND | MS_REC},
    {"noatime", false, MS_NOATIME},
    {"atime", true, MS_NOATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"diratime", true, MS_NODIRATIME},
    {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME},
    {"lazytime", false, MS_LAZYTIME},
    {"nolazytime", true, MS_LAZYTIME},
};

// Propagation changes cannot be combined with other flags in one mount(2)
// call, so they are applied by a second call.
struct PropagationWord {
  std::string_view word;
  unsigned long flags;
};

constexpr PropagationWord kPropagationWords[] = {
    {"private", MS_PRIVATE},         {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},           {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},             {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE},   {"runbindable", MS_UNBINDABLE | MS_REC},
};

std::string Describe(const Mount& m, size_t index, size_t count, const std::string& target) {
  return fmt::format("mount {}/{} (type '{}', source '{}', options '{}') on {}", index + 1, count,
                     m.type, m.source, fmt::join(m.options, ","), target);
}

// One umount of the top mount on `target`, detaching it if it is busy.
bool UnmountTop(const std::string& target) {
  if (umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return true;
  return errno == EBUSY && umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0;
}

// Mounts `m`; returns whether it stacked a new mount on `target` (a pure
// remount does not). A failure after the mount itself undoes that mount.
absl::StatusOr<bool> MountOne(const Mount& m, size_t index, size_t count,
                              const std::string& target) {
  MountOptions opts = ParseMountOptions(m.options);
  if (m.type == "bind") opts.flags |= MS_BIND;
  const bool remount = (opts.flags & MS_REMOUNT) != 0;
  const char* type = m.type.empty() ? nullptr : m.type.c_str();

  bool stacked = false;
  // A remount without data changes only flags; the calls below do that.
  if (!remount || !opts.data.empty()) {
    if (mount(m.source.c_str(), target.c_str(), type, opts.flags,
              opts.data.empty() ? nullptr : opts.data.c_str()) != 0) {
      return base::ErrnoStatus(Describe(m, index, count, target));
    }
    stacked = !remount;
  }
  auto fail = [&](std::string_view step) {
    absl::Status s = base::ErrnoStatus(fmt::format("{}: {}", Describe(m, index, count, target), step));
    if (stacked) UnmountTop(target);
    return s;
  };
  if (opts.propagation != 0 &&
      mount(nullptr, target.c_str(), nullptr, opts.propagation, nullptr) != 0) {
    return fail("setting propagation");
  }
  // A bind mount ignores MS_RDONLY (and the other per-mount flags) on the
  // first call; they take effect only through a bind remount.
  constexpr unsigned long kReadOnlyBind = MS_BIND | MS_RDONLY;
  if (!remount && (opts.flags & kReadOnlyBind) == kReadOnlyBind &&
      mount(nullptr, target.c_str(), nullptr, (opts.flags & ~MS_REC) | MS_REMOUNT, nullptr) != 0) {
    return fail("remounting read-only");
  }
  return stacked;
}

}  // namespace

MountOptions ParseMountOptions(const std::vector<std::string>& options) {
  MountOptions out;
  for (const std::string& option : options) {
    bool known = false;
    for (const FlagWord& f : kFlagWords) {
      if (option != f.word) continue;
      if (f.clear) {
        out.flags &= ~f.flags;
      } else {
        out.flags |= f.flags;
      }
      known = true;
      break;
    }
    for (const PropagationWord& p : kPropagationWords) {
      if (known || option != p.word) continue;
      out.propagation = p.flags;  // the last one wins
      known = true;
      break;
    }
    if (known) continue;
    if (!out.data.empty()) out.data += ',';
    out.data += option;
  }
  return out;
}

std::string RootfsOf(const std::string& bundle) { return bundle + "/rootfs"; }

absl::Status MountRootfs(const std::vector<Mount>& mounts, const std::string& target) {
  size_t stacked = 0;
  for (size_t i = 0; i < mounts.size(); ++i) {
    absl::StatusOr<bool> done = MountOne(mounts[i], i, mounts.size(), target);
    if (!done.ok()) {
      // Leave the target as we found it.
      for (; stacked > 0; --stacked) UnmountTop(target);
      return done.status();
    }
    if (*done) ++stacked;
  }
  return absl::OkStatus();
}

absl::Status UnmountRootfs(const std::string& target) {
  // Bounded, so that a mount that keeps reappearing cannot spin forever.
  constexpr int kMaxStacked = 1024;
  for (int i = 0; i < kMaxStacked; ++i) {
    if (umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) continue;
    const int err = errno;
    // EINVAL: not a mount point (any more). ENOENT: no target at all.
    if (err == EINVAL || err == ENOENT) return absl::OkStatus();
    if (err == EINTR) continue;
    if (err == EBUSY && umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) continue;
    return base::ErrnoStatus(fmt::format("unmount {}", target), errno);
  }
  return absl::InternalError(
      fmt::format("unmount {}: still a mount point after {} unmounts", target, kMaxStacked));
}

}  // namespace shim::oci
