// io_uid/io_gid (root: chown): the fifos and the logger's pipes the container
// gets belong to them; regular files never change hands.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "fmt/format.h"
#include "shim/oci/stdio.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/test_logger.h"

namespace {

using shim::oci::OpenStdio;
using shim::oci::StdioOptions;
using test_support::ScopedTempDir;

constexpr uint32_t kUid = 100000, kGid = 100001;

void CheckOwner(int fd, uint32_t uid, uint32_t gid) {
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_uid == uid);
  CHECK(st.st_gid == gid);
}

TEST_CASE("io_uid/io_gid: stdin, stdout and stderr fifos are chowned; files are not",
          "[root]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  std::string in = dir.Sub("in"), out = dir.Sub("out"), err = dir.Sub("err"), file = dir.Sub("f");
  for (const std::string& f : {in, out, err}) REQUIRE(mkfifo(f.c_str(), 0700) == 0);
  StdioOptions options;
  options.io_uid = kUid;
  options.io_gid = kGid;
  auto opened = OpenStdio({.in = in, .out = out, .err = err}, options);
  REQUIRE_OK(opened);
  CheckOwner(opened->child.in.get(), kUid, kGid);
  CheckOwner(opened->child.out.get(), kUid, kGid);
  CheckOwner(opened->child.err.get(), kUid, kGid);

  auto to_file = OpenStdio({.in = "", .out = "file://" + file, .err = file}, options);
  REQUIRE_OK(to_file);
  CheckOwner(to_file->child.out.get(), 0, 0);

  // Without io ids nothing changes hands.
  const std::string plain = dir.Sub("plain");
  REQUIRE(mkfifo(plain.c_str(), 0700) == 0);
  auto untouched = OpenStdio({.in = "", .out = plain, .err = ""});
  REQUIRE_OK(untouched);
  CheckOwner(untouched->child.out.get(), 0, 0);
}

TEST_CASE("io_uid/io_gid: a binary:// logger's pipes are chowned", "[root]") {
  ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string logger = dir.Sub("logger.sh");
  REQUIRE_OK(test_support::InstallTestLogger(logger));
  StdioOptions options;
  options.io_uid = kUid;
  options.io_gid = kGid;
  auto opened = OpenStdio(
      {.in = "", .out = fmt::format("binary://{}?dir={}", logger, dir.path()), .err = ""}, options);
  REQUIRE_OK(opened);
  CheckOwner(opened->child.out.get(), kUid, kGid);
  CheckOwner(opened->child.err.get(), kUid, kGid);
}

}  // namespace
