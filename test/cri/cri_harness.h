// CriHarness: a private containerd with its CRI plugin, for critest and crictl.
//
//   absl::StatusOr<std::unique_ptr<CriHarness>> h = CriHarness::Start({});
//   if (absl::IsNotFound(h.status())) SKIP(h.status().message());  // a prerequisite is absent
//   absl::StatusOr<CritestReport> r = (*h)->RunCritest({.runtime_handler = "embed"});
//
// What it sets up, all of it the test's own and gone after it:
// - a network and an IPC namespace for this process (unshare; the caller's
//   thread and everything it starts from then on): CNI's bridge, host ports
//   and iptables rules, and the shared memory segments critest's HostIpc
//   specs make "on the host", stay in them and vanish with them;
// - an offline registry on 127.0.0.1 (test/cri/registry.py) with every image
//   critest pulls, named in containerd's CRI config as the mirror of every
//   registry;
// - CNI from Debian's containernetworking-plugins (bridge, host-local,
//   portmap, loopback), its config and IPAM state in the harness's directory;
// - containerd (PrivateContainerd: teardown kills, unmounts and removes
//   everything, also after a failed REQUIRE) with runtime handlers `runc`
//   (io.containerd.runc.v2) and `embed` (io.containerd.embed.v1), the latter
//   exactly as docs/CRI.md documents it for the config version.
//
// Debian's containerd 1.6 gets a `version = 2` config
// (io.containerd.grpc.v1.cri, registry.mirrors."*"); a 2.x peer a
// `version = 3` one (io.containerd.cri.v1.runtime / .images, hosts.toml
// under config_path, NRI off). restrict_oom_score_adj is on: this host
// withholds CAP_SYS_RESOURCE (see /work/shared/peers/README.md).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/subprocess.h"

namespace test_support {

struct CriHarnessOptions {
  // "" = Debian's containerd (and ctr); else a peer, e.g. "containerd-v2.3.4".
  std::string containerd_peer;
};

// One critest spec's outcome, from its JUnit report.
struct CritestSpec {
  std::string name;    // "[k8s.io] Container runtime ... [Conformance]"
  std::string status;  // "passed", "failed", "skipped", "pending"
  double seconds = 0;
};

struct CritestReport {
  std::string runtime_handler;
  std::string containerd_version;  // e.g. "1.6.20"
  std::vector<CritestSpec> specs;  // the [It] specs only
  int passed = 0, failed = 0, skipped = 0;
  double seconds = 0;              // critest's wall time
  int exit_code = -1;
  std::string output_path;         // critest's whole output
  std::vector<std::string> Failed() const;
  std::vector<std::string> Passed() const;
  // "critest embed on containerd 1.6.20: 79 passed, 0 failed, 6 skipped in 241 s"
  std::string Summary() const;
};

struct CritestOptions {
  std::string runtime_handler = "embed";
  // Regular expression of specs to skip (-ginkgo.skip); empty = none.
  std::string skip;
  // Regular expression of specs to run (-ginkgo.focus); empty = all.
  std::string focus;
  std::chrono::seconds timeout{1800};
};

class CriHarness {
 public:
  // NotFound when a prerequisite is absent (the message says which).
  static absl::StatusOr<std::unique_ptr<CriHarness>> Start(CriHarnessOptions options = {});
  ~CriHarness();
  CriHarness(const CriHarness&) = delete;
  CriHarness& operator=(const CriHarness&) = delete;

  PrivateContainerd& containerd() { return *containerd_; }
  const std::string& containerd_version() const { return version_; }
  // "unix://<socket>", for critest's and crictl's endpoints.
  std::string endpoint() const;
  const std::string& dir() const { return dir_; }

  // `crictl --runtime-endpoint E --image-endpoint E <args...>`.
  std::vector<std::string> CrictlArgv(std::vector<std::string> args) const;
  absl::StatusOr<Result> Crictl(std::vector<std::string> args,
                                Clock::duration timeout = std::chrono::seconds(120));
  // Runs critest (serially: the binary is a `go test -c` one) and reads its
  // JUnit report. Its output goes to dir()/critest-<handler>-<n>.log.
  absl::StatusOr<CritestReport> RunCritest(const CritestOptions& options);

 private:
  CriHarness() = default;
  ScopedTempDir temp_{"embed-cri-"};
  std::string dir_;
  std::string version_;
  std::string crictl_, critest_;
  int critest_runs_ = 0;
  std::optional<Subprocess> registry_;
  std::unique_ptr<PrivateContainerd> containerd_;  // last: torn down first
};

// The CRI part of the containerd config the harness runs (PrivateContainerd's
// extra_config), for config `version` 2 or 3, with the registry mirror at
// `registry` (host:port) and the CNI config and hosts.toml dirs under
// `harness_dir`; its runtime handler `embed` is docs/CRI.md's snippet for
// that version.
absl::StatusOr<std::string> CriConfig(int version, const std::string& registry,
                                      const std::string& harness_dir);

// docs/CRI.md's TOML block for config `version` (2 or 3): the text between
// the ```toml fence after "<!-- cri-config: version N -->" and the next fence.
absl::StatusOr<std::string> DocumentedRuntimeHandler(int version);

// A prerequisite is absent (Start's NotFound): the run skips as a whole
// (exit 77: meson's SKIP; run-catch passes it on), saying why.
[[noreturn]] void SkipRun(const absl::Status& why);

// Parses a ginkgo v2 JUnit report; specs only ("[It] " testcases).
absl::StatusOr<std::vector<CritestSpec>> ParseJunit(const std::string& xml);

}  // namespace test_support
