// User-namespaced containers through a stock containerd 1.6 and ctr:
//
//   ctr run --config SPEC --uidmap 0:100000:65536 --gidmap 0:100000:65536 ...
//
// ctr 1.6 puts the user namespace into the spec only for images, so the spec
// comes from a file (`runc spec --rootless`, mapped to 100000), with a
// busybox rootfs chowned to 100000. --uidmap/--gidmap make ctr send IoUid and
// IoGid (containerd.linux.runc.CreateOptions, as for any non-runc runtime).
// The container's stdout is containerd's fifo itself here, so the shim
// chowns it to IoUid/IoGid: only then can the container's root reopen its
// own stdout (/dev/stdout), as under runc-v2, whose pipes it chowns.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "test/integration/survival_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace survival;

constexpr char kHostId[] = "100000";

void Replace(std::string& text, const std::string& from, const std::string& to, int times = 1) {
  for (int i = 0; i < times; ++i) {
    size_t at = text.find(from);
    INFO("the spec does not contain: " << from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
  }
}

// A spec for a user-namespaced container running `script` in `rootfs`.
std::string UsernsSpec(const std::string& dir, const std::string& rootfs, bool read_only,
                       const std::string& script) {
  absl::StatusOr<Result> spec = test_support::Run({"runc", "spec", "--rootless", "--bundle", dir});
  REQUIRE_OK(spec);
  REQUIRE(spec->ok());
  absl::StatusOr<std::string> text = test_support::ReadFile(dir + "/config.json");
  REQUIRE_OK(text);
  std::string s = *text;
  Replace(s, "\"terminal\": true", "\"terminal\": false");
  Replace(s, "\"args\": [\n\t\t\t\"sh\"\n\t\t]", fmt::format("\"args\": [\"sh\", \"-c\", \"{}\"]", script));
  Replace(s, "\"path\": \"rootfs\"", fmt::format("\"path\": \"{}\"", rootfs));
  Replace(s, "\"readonly\": true", fmt::format("\"readonly\": {}", read_only));
  Replace(s, "\"hostID\": 0", fmt::format("\"hostID\": {}", kHostId), 2);
  Replace(s, "\"size\": 1\n", "\"size\": 65536\n", 2);
  const std::string path = dir + "/spec.json";
  REQUIRE_OK(test_support::WriteFile(path, s));
  return path;
}

void RunUserns(bool read_only) {
  auto s = Survival::Start();
  const std::string ns = UniqueName("userns");
  const std::string id = UniqueName(read_only ? "usro" : "usrw");
  // The mapped root must be able to reach its rootfs under the fixture's
  // (0700) directory.
  REQUIRE(chmod(s->cd().dir().c_str(), 0711) == 0);
  const std::string rootfs = s->Rootfs("rootfs-" + id);
  absl::StatusOr<Result> chown =
      test_support::Run({"chown", "-hR", fmt::format("{}:{}", kHostId, kHostId), rootfs});
  REQUIRE_OK(chown);
  REQUIRE(chown->ok());
  const std::string spec_dir = s->cd().dir() + "/spec-" + id;
  REQUIRE_OK(test_support::MakeDirs(spec_dir));
  // No double quotes or backslashes: it goes into JSON as is.
  const std::string script =
      "echo uid=$(id -u); cat /proc/self/uid_map; stat -L -c fd1=%u:%g /proc/self/fd/1; "
      "echo via-dev-stdout > /dev/stdout; "
      "touch /probe && echo rootfs-writable || echo rootfs-read-only; exit 7";
  const std::string spec = UsernsSpec(spec_dir, rootfs, read_only, script);

  absl::StatusOr<Result> r = s->cd().Ctr(
      {"-n", ns, "run", "--runtime", kRuntime, "--uidmap", fmt::format("0:{}:65536", kHostId),
       "--gidmap", fmt::format("0:{}:65536", kHostId), "--config", spec, id});
  REQUIRE_OK(r);
  INFO(*r << "\n" << s->Logs());
  CHECK(r->exit_code == 7);
  CHECK_THAT(r->out, Catch::Contains("uid=0\n"));
  CHECK_THAT(r->out, Catch::Contains(fmt::format("0     {}      65536\n", kHostId)));
  // The fifo the container writes to belongs to its root (IoUid/IoGid)...
  CHECK_THAT(r->out, Catch::Contains("fd1=0:0\n"));
  // ...so it can open it again by name.
  CHECK_THAT(r->out, Catch::Contains("via-dev-stdout\n"));
  CHECK_THAT(r->out, Catch::Contains(read_only ? "rootfs-read-only\n" : "rootfs-writable\n"));
  test_support::RemoveRuncNamespaceRoot(ns);
}

}  // namespace

TEST_CASE("userns: a user-namespaced container with a read-only rootfs writes its stdout, "
          "reopens it, and exits 7",
          "[containerd][userns]") {
  RunUserns(/*read_only=*/true);
}

TEST_CASE("userns: a user-namespaced container with a writable rootfs writes its stdout, "
          "reopens it, and exits 7",
          "[containerd][userns]") {
  RunUserns(/*read_only=*/false);
}
