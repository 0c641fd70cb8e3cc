// Peers: containerd releases that Debian 12 lacks, from ../shared/peers/
// (next to the repository; $EMBED_PEERS_DIR overrides), unpacked once per
// boot into /var/tmp/embed-peers/<name>/ and reused by every test.
//
//   absl::StatusOr<PeerRelease> v = FindPeer("containerd-v1.7.34");
//   if (!v.ok()) SKIP(v.status().message());   // the archive is absent
//   options.containerd = v->Binary("containerd");
//
// A missing archive is NotFound with a message naming where it was looked
// for, so that a test can skip and say why instead of passing silently.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace test_support {

// $EMBED_PEERS_DIR, else <source root>/../shared/peers.
std::string PeersDir();

struct PeerRelease {
  std::string name;     // e.g. "containerd-v1.7.34"
  std::string version;  // e.g. "1.7.34"
  std::string bin_dir;  // the unpacked NAME/bin
  std::string Binary(std::string_view program) const { return bin_dir + "/" + std::string(program); }
};

// Unpacks PeersDir()/<name>.tar.xz (once; concurrent callers wait on a lock).
absl::StatusOr<PeerRelease> FindPeer(std::string_view name);

// The containerd releases in PeersDir(), oldest first (e.g. "containerd-v1.7.34").
std::vector<std::string> PeerContainerdNames();

// The containerd a test suite runs against, from $EMBED_CONTAINERD: a peer's
// name ("containerd-v2.3.4"), or unset, "" or "debian" for Debian's
// containerd 1.6 on PATH. meson registers the e2e and survival suites once
// per version with it (test/integration/meson.build).
struct ContainerdUnderTest {
  std::string name = "debian";  // as in $EMBED_CONTAINERD
  std::string containerd = "containerd";
  std::string ctr = "ctr";
  int major = 1, minor = 6;
  // The peer's bin dir: containerd's PATH, after the shim's, so that its
  // own containerd-shim-runc-v2 serves io.containerd.runc.v2.
  std::string bin_dir;
  bool is_2x() const { return major >= 2; }
  // containerd's config version (PrivateContainerdOptions::config_version).
  int config_version() const { return major >= 2 ? 3 : 2; }
  // For messages and test names: "containerd 2.3.4" or "containerd 1.6 (Debian)".
  std::string Describe() const;
};

// NotFound (saying where it looked) when $EMBED_CONTAINERD names a peer
// whose archive is absent: the suite then skips with that reason.
absl::StatusOr<ContainerdUnderTest> ContainerdFromEnv();

}  // namespace test_support
