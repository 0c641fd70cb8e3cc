// Filesystem helpers for tests: unique names, an RAII temporary directory,
// whole-file read/write, mount cleanup and a removal that never leaves the
// directory's own filesystem (so a forgotten bind mount cannot make a test
// delete the host's files).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace test_support {

// "<prefix>-<pid>-<counter>-<random hex>": unique across processes and calls,
// and valid as a containerd namespace, container id or file name.
std::string UniqueName(std::string_view prefix);

// Splits on `sep` (std::string_view throughout: Debian's absl has its own
// absl::string_view, which does not mix with std::string_view).
std::vector<std::string> Split(std::string_view text, char sep, bool skip_empty = true);
// Non-empty lines with surrounding whitespace stripped.
std::vector<std::string> SplitLines(std::string_view text);

absl::StatusOr<std::string> ReadFile(const std::string& path);
absl::Status WriteFile(const std::string& path, std::string_view data, int mode = 0644);
// Creates dir and its parents (like mkdir -p).
absl::Status MakeDirs(const std::string& dir, int mode = 0755);

// Mount points at or below `dir` in this mount namespace, deepest first
// (from /proc/self/mountinfo, with its octal escapes decoded).
absl::StatusOr<std::vector<std::string>> MountsUnder(const std::string& dir);
// Lazily unmounts (MNT_DETACH) everything at or below `dir`, deepest first,
// repeating until nothing is left (stacked mounts).
absl::Status UnmountUnder(const std::string& dir);
// Removes `path` recursively without following symlinks and without crossing
// into another filesystem (a mount point left below it is an error).
// A missing `path` is not an error.
absl::Status RemoveTree(const std::string& path);

// RAII temporary directory: mkdtemp("<base>/<prefix>XXXXXX"). The destructor
// unmounts anything below it and removes it (see RemoveTree).
class ScopedTempDir {
 public:
  // Creates the directory; check ok() (no exceptions across layers).
  explicit ScopedTempDir(std::string_view prefix = "embed-test-",
                         std::string_view base = "/tmp");
  ~ScopedTempDir();
  ScopedTempDir(ScopedTempDir&& other) noexcept;
  ScopedTempDir& operator=(ScopedTempDir&& other) noexcept;
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  // Canonical absolute path (empty if creation failed or after Release()).
  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(std::string_view name) const;
  // Unmount + remove now; returns what went wrong. Idempotent.
  absl::Status Remove();
  // Stop owning the directory; returns its path.
  std::string Release();

 private:
  std::string path_;
  absl::Status status_;
};

}  // namespace test_support
