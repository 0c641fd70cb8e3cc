// The serving process: one per containerd, serving every namespace.
#pragma once

#include "shim/manager/flags.h"

namespace shim {

// The server: serves what the keeper relays ($EMBED_SHIM_KEEPER_FD) until
// idle (Shutdown asked and no container left), SIGTERM/SIGINT, or the
// keeper's death.
int RunDaemon(const Flags& flags);

}  // namespace shim
