// The serving process: one per containerd, serving every namespace.
#pragma once

#include "shim/flags.h"

namespace shim {

// Runs until idle (Shutdown asked and no container left) or SIGTERM/SIGINT.
// Writes "ready" to $EMBED_SHIM_READY_FD once it listens.
int RunDaemon(const Flags& flags);

}  // namespace shim
