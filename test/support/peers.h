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

}  // namespace test_support
