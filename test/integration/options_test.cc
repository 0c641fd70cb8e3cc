// Runtime options end to end on containerd 1.6: what `ctr run` sends for
// io.containerd.embed.v1 reaches runc. ctr 1.6 refuses --runc-binary,
// --runc-root and --runc-systemd-cgroup for any runtime but runc.v2; it sends
// `--runtime-config-path FILE` as runtimeoptions.v1.Options and `--no-pivot`
// as containerd.linux.runc.CreateOptions. A wrapper script in front of runc
// records each command line it gets.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "test/integration/shim_e2e_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using namespace e2e;

// The runc that containerd's PATH finds, resolved before a wrapper shadows it.
std::string RealRunc() {
  for (const char* dir : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin"}) {
    std::string path = std::string(dir) + "/runc";
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// <path>: a script that appends its arguments to <path>.calls, then runs runc.
std::string MakeRuncWrapper(const std::string& path) {
  const std::string runc = RealRunc();
  INFO("runc is not installed (scripts/install-deps installs it)");
  REQUIRE_FALSE(runc.empty());
  REQUIRE_OK(test_support::WriteFile(
      path, fmt::format("#!/bin/sh\necho \"$*\" >> {}.calls\nexec {} \"$@\"\n", path, runc),
      0755));
  return path + ".calls";
}

// The recorded command lines with `word` in them.
std::vector<std::string> CallsWith(const std::string& calls, const std::string& word) {
  std::vector<std::string> out;
  absl::StatusOr<std::string> text = test_support::ReadFile(calls);
  if (!text.ok()) return out;
  for (const std::string& line : test_support::SplitLines(*text)) {
    if ((" " + line + " ").find(" " + word + " ") != std::string::npos) out.push_back(line);
  }
  return out;
}

bool Has(const std::string& line, const std::string& text) {
  return (" " + line + " ").find(" " + text + " ") != std::string::npos;
}

TEST_CASE("options e2e: --runtime-config-path sets BinaryName, Root, NoNewKeyring; "
          "a ShimCgroup that does not exist fails nothing",
          "[containerd][shim][options]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("opts");
  const std::string rootfs = e->Rootfs();
  const std::string dir = e->cd().dir();
  const std::string calls = MakeRuncWrapper(dir + "/runc-wrapper");
  const std::string root = dir + "/runc-root";
  const std::string config = dir + "/runtime.toml";
  REQUIRE_OK(test_support::WriteFile(
      config, fmt::format("# for io.containerd.embed.v1\n"
                          "BinaryName = \"{}/runc-wrapper\"\n"
                          "Root = \"{}\"\n"
                          "NoNewKeyring = true\n"
                          "ShimCgroup = \"/{}\"\n"
                          "[another.runtime]\n"
                          "BinaryName = \"not-this-one\"\n",
                          dir, root, UniqueName("no-such-cgroup"))));
  const std::string id = UniqueName("cfg");
  RunDetached(e->cd(), ns, rootfs, id, {"sleep", "100000"}, {"--runtime-config-path", config});
  INFO("runc calls:\n" << test_support::ReadFile(calls).value_or("(none)") << "\nshim log:\n"
                       << e->ShimLog());

  std::vector<std::string> creates = CallsWith(calls, "create");
  REQUIRE(creates.size() == 1);
  CHECK(Has(creates[0], fmt::format("--root {}/{}", root, ns)));
  CHECK(Has(creates[0], "--no-new-keyring"));
  CHECK_FALSE(Has(creates[0], "--no-pivot"));
  CHECK(CallsWith(calls, "start").size() == 1);
  // runc keeps the container's state under the configured root.
  struct stat st;
  CHECK(stat(fmt::format("{}/{}/{}/state.json", root, ns, id).c_str(), &st) == 0);
  // Later calls go through the same binary: ps (its JSON read back).
  std::string ps = CtrOk(e->cd(), {"-n", ns, "tasks", "ps", id});
  CHECK(ps.find("PID") != std::string::npos);
  CHECK(CallsWith(calls, "ps").size() == 1);
  // The start that launched the shim tried the ShimCgroup, and said why not.
  CHECK(e->ShimLog().find("not joined") != std::string::npos);
}

TEST_CASE("options e2e: a bad runtime config file fails the run with its line",
          "[containerd][shim][options]") {
  auto e = E2E::Start();
  const std::string ns = UniqueName("optbad");
  const std::string rootfs = e->Rootfs();
  const std::string config = e->cd().dir() + "/bad.toml";
  REQUIRE_OK(test_support::WriteFile(config, "BinaryName = \"runc\"\nRoot = /unquoted\n"));
  absl::StatusOr<Result> r = e->cd().Ctr(RunArgs(ns, {"-d", "--runtime-config-path", config},
                                                 rootfs, UniqueName("bad"), {"true"}));
  REQUIRE_OK(r);
  INFO(*r);
  CHECK(r->exit_code != 0);
  CHECK(r->err.find(fmt::format("runtime config {}:2:", config)) != std::string::npos);
}

TEST_CASE("options e2e: ctr run --no-pivot (CreateOptions) gives runc create --no-pivot",
          "[containerd][shim][options]") {
  // A wrapper named runc first on containerd's PATH (and so the shim's).
  test_support::ScopedTempDir wrap_dir;
  REQUIRE_OK(wrap_dir.status());
  const std::string calls = MakeRuncWrapper(wrap_dir.Sub("runc"));
  test_support::PrivateContainerdOptions options;
  options.extra_path = std::vector<std::string>{wrap_dir.path(), test_support::DefaultShimDir()};
  auto e = E2E::Start(options);
  const std::string ns = UniqueName("nopivot");
  const std::string rootfs = e->Rootfs();
  const std::string id = UniqueName("np");
  RunDetached(e->cd(), ns, rootfs, id, {"sleep", "100000"}, {"--no-pivot"});
  INFO("runc calls:\n" << test_support::ReadFile(calls).value_or("(none)"));
  std::vector<std::string> creates = CallsWith(calls, "create");
  REQUIRE(creates.size() == 1);
  CHECK(Has(creates[0], "--no-pivot"));
  CHECK(Has(creates[0], fmt::format("--root /run/containerd/runc/{}", ns)));
  CHECK_FALSE(Has(creates[0], "--no-new-keyring"));
  e.reset();  // the shim and its runc calls end before the wrapper goes
  test_support::RemoveRuncNamespaceRoot(ns);
}

// A cgroup made for the test in the v1 memory and pids hierarchies (or the
// v2 tree), removed when the shim has left it.
class TestCgroup {
 public:
  explicit TestCgroup(const std::string& name) : rel_("/" + name) {
    struct stat st;
    if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) {
      dirs_.push_back("/sys/fs/cgroup" + rel_);
    } else {
      for (const char* h : {"memory", "pids"}) dirs_.push_back(fmt::format("/sys/fs/cgroup/{}{}", h, rel_));
    }
    for (const std::string& d : dirs_) REQUIRE(mkdir(d.c_str(), 0755) == 0);
  }
  ~TestCgroup() {
    for (const std::string& d : dirs_) rmdir(d.c_str());
  }
  const std::string& rel() const { return rel_; }

 private:
  std::string rel_;
  std::vector<std::string> dirs_;
};

TEST_CASE("options e2e: the start that launches the shim joins its ShimCgroup",
          "[containerd][shim][options]") {
  TestCgroup cgroup(UniqueName("embed-shim-cg"));  // outlives the fixture
  auto e = E2E::Start();
  const std::string ns = UniqueName("optcg");
  const std::string rootfs = e->Rootfs();
  const std::string config = e->cd().dir() + "/runtime.toml";
  REQUIRE_OK(test_support::WriteFile(config, fmt::format("ShimCgroup = \"{}\"\n", cgroup.rel())));
  RunDetached(e->cd(), ns, rootfs, UniqueName("cg"), {"sleep", "100000"},
              {"--runtime-config-path", config});
  const pid_t server = e->TheDaemon();
  absl::StatusOr<std::string> cgroups = test_support::ReadFile(fmt::format("/proc/{}/cgroup", server));
  REQUIRE_OK(cgroups);
  INFO(*cgroups << "\nshim log:\n" << e->ShimLog());
  bool in_it = false;
  for (const std::string& line : test_support::SplitLines(*cgroups)) {
    if ((line.find(":memory:") != std::string::npos || line.starts_with("0::")) &&
        line.ends_with(":" + cgroup.rel()))
      in_it = true;
  }
  CHECK(in_it);
  for (pid_t keeper : e->processes().keepers) {
    absl::StatusOr<std::string> k = test_support::ReadFile(fmt::format("/proc/{}/cgroup", keeper));
    REQUIRE_OK(k);
    CHECK(k->find(":" + cgroup.rel() + "\n") != std::string::npos);
  }
  // A second container's ShimCgroup moves nothing; it is only logged.
  e.reset();
}

}  // namespace
