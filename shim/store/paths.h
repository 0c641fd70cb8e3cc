// Where one shim instance keeps its things. There is one instance per
// containerd daemon, named by a hash of containerd's address, so several
// containerd daemons on a host each get their own shim.
#pragma once

#include <cstdint>
#include <string>

namespace shim {

struct InstancePaths {
  std::string instance;  // 16 hex digits from containerd's address
  std::string dir;       // /run/containerd-embed/<instance>, mode 0700
  std::string socket;    // <dir>/shim.sock, mode 0600
  std::string lock;      // <dir>/start.lock: serialises start and exit
  std::string log;       // <dir>/shim.log
  std::string state;     // <dir>/state: one record per container
  std::string bpf;       // /sys/fs/bpf/containerd-embed/<instance>

  // "unix://<socket>": what `start` prints and containerd dials.
  std::string address() const { return "unix://" + socket; }
  // <dir>/starts: how many `start`s answered with the running daemon's
  // address, counted under the start lock. A daemon about to leave when idle
  // stays if the count moved since it went idle: that start's task is on
  // its way (daemon.cc, RunDaemon).
  std::string starts() const { return dir + "/starts"; }
  // <dir>/ns-<hash of namespace>.sock. containerd 1.6 sends no namespace with
  // its requests, so each namespace gets a socket of its own, and `start`
  // hands out the one for its -namespace: a connection's socket names its
  // namespace. (1.7+ also send it as metadata.)
  std::string NamespaceSocket(const std::string& ns) const;
};

// FNV-1a, as 16 hex digits: stable across builds and runs (std::hash is not).
std::string StableHash(const std::string& s);

// This process's executable (/proc/self/exe resolved), and a binary of ours
// installed beside it: the launcher, the server and the keeper live in one
// directory.
std::string SelfExecutable();
std::string SiblingBinary(const std::string& name);

// $EMBED_SHIM_RUN_DIR overrides /run/containerd-embed (tests, rootless hosts).
InstancePaths PathsFor(const std::string& containerd_address);

// Counts one more `start` that answers with the running daemon. Call with
// the start lock held. Best effort: if it fails, the daemon may leave as if
// the start had not come.
void CountAnsweredStart(const InstancePaths& paths);
// That count: 0 if none yet, or if the file cannot be read or parsed.
uint64_t AnsweredStarts(const InstancePaths& paths);

}  // namespace shim
