// MountRootfs / UnmountRootfs with real mounts under a temp dir (root).
#include "shim/oci/mount.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <catch2/catch.hpp>

#include "base/unique_fd.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using shim::oci::Mount;
using shim::oci::MountRootfs;
using shim::oci::UnmountRootfs;
using test_support::MountsUnder;
using test_support::ReadFile;
using test_support::ScopedTempDir;
using test_support::WriteFile;

std::string MakeDir(const ScopedTempDir& tmp, const char* name) {
  std::string dir = tmp.Sub(name);
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  return dir;
}

size_t MountCount(const std::string& dir) {
  auto mounts = MountsUnder(dir);
  REQUIRE_OK(mounts);
  return mounts->size();
}

// The optional fields (e.g. "shared:12 master:3") of the topmost mount on
// `target`, from /proc/self/mountinfo.
std::string PropagationOf(const std::string& target) {
  auto info = ReadFile("/proc/self/mountinfo");
  REQUIRE_OK(info);
  std::string found;
  for (const std::string& line : test_support::SplitLines(*info)) {
    std::vector<std::string> fields = test_support::Split(line, ' ');
    if (fields.size() < 7 || fields[4] != target) continue;
    found = "none";
    for (size_t i = 6; i < fields.size() && fields[i] != "-"; ++i) found += " " + fields[i];
  }
  return found;
}

TEST_CASE("MountRootfs: a read-only rbind shows the source, UnmountRootfs removes it", "[root]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string src = MakeDir(tmp, "src");
  const std::string target = MakeDir(tmp, "rootfs");
  REQUIRE_OK(WriteFile(src + "/hello", "from the source"));

  REQUIRE_OK(MountRootfs({{.type = "bind", .source = src, .options = {"rbind", "ro"}}}, target));
  CHECK(MountCount(target) == 1);
  auto text = ReadFile(target + "/hello");
  REQUIRE_OK(text);
  CHECK(*text == "from the source");
  // "ro" took effect (a bind needs a second, remount call for that).
  errno = 0;
  CHECK(open((target + "/new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644) == -1);
  CHECK(errno == EROFS);

  REQUIRE_OK(UnmountRootfs(target));
  CHECK(MountCount(target) == 0);
  CHECK(access((target + "/hello").c_str(), F_OK) != 0);
  // Nothing mounted, or no target at all: still fine.
  REQUIRE_OK(UnmountRootfs(target));
  REQUIRE_OK(UnmountRootfs(tmp.Sub("does-not-exist")));
}

TEST_CASE("MountRootfs: an overlay of two lower dirs and an upper dir", "[root]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string lower1 = MakeDir(tmp, "lower1");
  const std::string lower2 = MakeDir(tmp, "lower2");
  const std::string upper = MakeDir(tmp, "upper");
  const std::string work = MakeDir(tmp, "work");
  const std::string target = MakeDir(tmp, "rootfs");
  REQUIRE_OK(WriteFile(lower1 + "/a", "A"));
  REQUIRE_OK(WriteFile(lower2 + "/b", "B"));

  REQUIRE_OK(MountRootfs({{.type = "overlay",
                           .source = "overlay",
                           .options = {"index=off", "lowerdir=" + lower1 + ":" + lower2,
                                       "upperdir=" + upper, "workdir=" + work}}},
                         target));
  CHECK(MountCount(target) == 1);
  CHECK(*ReadFile(target + "/a") == "A");
  CHECK(*ReadFile(target + "/b") == "B");
  REQUIRE_OK(WriteFile(target + "/c", "C"));
  CHECK(*ReadFile(upper + "/c") == "C");

  REQUIRE_OK(UnmountRootfs(target));
  CHECK(MountCount(target) == 0);
}

TEST_CASE("MountRootfs: a failing second mount undoes the first", "[root]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string src = MakeDir(tmp, "src");
  const std::string target = MakeDir(tmp, "rootfs");

  absl::Status s = MountRootfs(
      {{.type = "bind", .source = src, .options = {"rbind"}},
       {.type = "overlay", .source = "overlay", .options = {"lowerdir=" + tmp.Sub("missing")}}},
      target);
  CHECK_FALSE(s.ok());
  CHECK_THAT(std::string(s.message()), Catch::Contains("mount 2/2 (type 'overlay'"));
  CHECK_THAT(std::string(s.message()), Catch::Contains(target));
  CHECK(MountCount(target) == 0);
}

TEST_CASE("UnmountRootfs: takes down stacked mounts, and detaches a busy one", "[root]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string src1 = MakeDir(tmp, "src1");
  const std::string src2 = MakeDir(tmp, "src2");
  const std::string target = MakeDir(tmp, "rootfs");
  REQUIRE_OK(WriteFile(src2 + "/busy", "x"));

  REQUIRE_OK(MountRootfs({{.type = "bind", .source = src1, .options = {"rbind"}},
                          {.type = "bind", .source = src2, .options = {"rbind"}}},
                         target));
  CHECK(MountCount(target) == 2);
  // An open file makes the top mount busy: umount fails with EBUSY.
  base::UniqueFd busy(open((target + "/busy").c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(busy.valid());

  REQUIRE_OK(UnmountRootfs(target));
  CHECK(MountCount(target) == 0);
}

TEST_CASE("MountRootfs: propagation options are applied", "[root]") {
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string src = MakeDir(tmp, "src");
  const std::string target = MakeDir(tmp, "rootfs");

  REQUIRE_OK(MountRootfs({{.type = "bind", .source = src, .options = {"rbind", "rshared"}}}, target));
  CHECK_THAT(PropagationOf(target), Catch::Contains("shared:"));
  REQUIRE_OK(UnmountRootfs(target));

  REQUIRE_OK(MountRootfs({{.type = "bind", .source = src, .options = {"rbind", "rprivate"}}}, target));
  CHECK(PropagationOf(target) == "none");
  REQUIRE_OK(UnmountRootfs(target));
  CHECK(MountCount(target) == 0);
}

}  // namespace
