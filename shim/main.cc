// containerd-shim-embed-v1-server: one containerd shim (runtime v2) for all
// the containers of a containerd daemon. containerd runs the small
// containerd-shim-embed-v1 (launcher_main.cc), which execs this binary for
// everything but the common `start`.
#include <cstdio>
#include <string>
#include <vector>

#include "base/absl_fmt.h"
#include "shim/daemon.h"
#include "shim/manager/commands.h"
#include "shim/manager/flags.h"

namespace {

constexpr char kUsage[] = R"(containerd-shim-embed-v1 {version}

One containerd shim (runtime v2) for all the containers of a containerd daemon.
Select it with `ctr run --runtime io.containerd.embed.v1 ...` or as a CRI runtime
handler with runtime_type "io.containerd.embed.v1".

Usage:
  containerd-shim-embed-v1 [flags] ACTION

Actions run by containerd:
  start     print the address of the shim serving -address, starting it if none runs
  delete    clean up container -id after a teardown or a lost shim; prints a
            DeleteResponse with the container's real exit status

Actions for users:
  ps        list what the running shim serves: containers, pids, exit statuses,
            and the shim's own processes and exit monitor (-json for scripts)
  upgrade   make the running shim continue on the binaries now installed,
            keeping every container, connection, fifo and exit

Flags (containerd passes them Go-style, with one dash):
  -namespace NS        the container's namespace
  -address PATH        containerd's gRPC socket; names the shim instance
                       (ps and upgrade default to /run/containerd/containerd.sock)
  -publish-binary BIN  accepted, unused (events go over $TTRPC_ADDRESS)
  -id ID               the container id
  -bundle DIR          the container's bundle (delete)
  -debug               log at debug level
  -json                machine-readable output (ps)
  -info                print a containerd.types.RuntimeInfo (protobuf) for the
                       runtime options on stdin, with the OCI runtime's features
                       (containerd 2.x runs it; `ctr plugins inspect-runtime`)
  -h, --help           this text
  -v, --version        the version

Binaries: containerd-shim-embed-v1 is what containerd runs; it answers the
common `start` itself and hands everything else to containerd-shim-embed-v1-server.
Processes: containerd-shim-embed-v1-keeper holds the sockets and connections;
`containerd-shim-embed-v1-server ... serve` (the server) does the rest and may
be restarted or upgraded without containerd noticing.

Files: /run/containerd-embed/<instance>/{{shim.sock,ns-*.sock,shim.log,state/,events/}},
and the exit monitor's pins in /sys/fs/bpf/containerd-embed/<instance>/.
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = shim::ParseFlags(args);
  if (!flags.ok()) {
    fmt::print(stderr, "containerd-shim-embed-v1: {}\n", flags.status().message());
    return 2;
  }
  if (flags->help) {
    fmt::print(kUsage, fmt::arg("version", SHIM_VERSION));
    return 0;
  }
  if (flags->version) {
    fmt::print("containerd-shim-embed-v1 {}\n", SHIM_VERSION);
    return 0;
  }
  if (flags->info) return shim::RunInfo(*flags);
  const std::string& action = flags->action;
  if (action == "start") return shim::RunStart(*flags);
  if (action == "delete") return shim::RunDelete(*flags);
  if (action == "serve") return shim::RunDaemon(*flags);
  if (action == "ps") return shim::RunPs(*flags);
  if (action == "upgrade") return shim::RunUpgrade(*flags);
  if (action.empty()) {
    fmt::print(stderr, "containerd-shim-embed-v1: no action given (see --help)\n");
  } else {
    fmt::print(stderr, "containerd-shim-embed-v1: unknown action {:?} (see --help)\n", action);
  }
  return 2;
}
