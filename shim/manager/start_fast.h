// The common case of `start`: the running shim already serves the
// namespace, and `start` only has to say so. It needs no protobuf and no
// RPC, so the small `containerd-shim-embed-v1` that containerd execs once
// per task runs it itself; anything else goes to the server binary.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "shim/manager/flags.h"

namespace shim {

// If a running shim serves flags.namespace_ for flags.address, writes the
// bundle's address file, prints the address and returns 0. nullopt means
// the whole `start` must run (no shim, a new namespace, or no namespace).
std::optional<int> StartIfServing(const Flags& flags);

// Whether something accepts connections on the unix socket at `path`.
bool Listening(const std::string& path);

// Replaces ./address (cwd is the bundle) atomically, as runc-v2 does:
// containerd 1.6 reloads a task after its own restart from it.
absl::Status WriteAddressFile(const std::string& address);

}  // namespace shim
