// The subcommands containerd runs (start, delete) and the ones a user runs.
#pragma once

#include "shim/manager/flags.h"

namespace shim {

// Prints the address of the shim serving flags.address, starting the daemon
// first if none runs.
int RunStart(const Flags& flags);

// containerd's cleanup after a teardown or a dead shim: prints a
// DeleteResponse for (namespace, id) with the container's real exit status.
int RunDelete(const Flags& flags);

// `-info` (containerd 2.x): reads the runtime options Any from stdin and
// prints a containerd.types.RuntimeInfo, as runc-v2 does: name, version,
// the options, and the OCI runtime's `features` JSON.
int RunInfo(const Flags& flags);

// What the running shim serves (-json for scripts).
int RunPs(const Flags& flags);

// Makes the running shim continue on the installed binaries: the keeper
// re-executes itself keeping every connection, then starts a new server.
int RunUpgrade(const Flags& flags);

}  // namespace shim
