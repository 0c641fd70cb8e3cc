// containerd-shim-embed-v1: what containerd executes, once per task
// (`start`) and after a lost shim (`delete`).
//
// It is small on purpose: no protobuf, statically linked, so an exec costs
// about as much as /bin/true. It answers the common `start` itself (the
// running shim already serves the namespace: StartIfServing) and hands
// every other action, with the same arguments, to
// containerd-shim-embed-v1-server next to it.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "shim/manager/flags.h"
#include "shim/manager/start_fast.h"
#include "shim/store/paths.h"

namespace {

constexpr char kServerBinary[] = "containerd-shim-embed-v1-server";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (auto flags = shim::ParseFlags(args); flags.ok() && flags->action == "start") {
    if (std::optional<int> rc = shim::StartIfServing(*flags)) return *rc;
  }
  std::string server = shim::SiblingBinary(kServerBinary);
  std::vector<char*> server_argv = {server.data()};
  for (int i = 1; i < argc; ++i) server_argv.push_back(argv[i]);
  server_argv.push_back(nullptr);
  execv(server.c_str(), server_argv.data());
  std::fprintf(stderr, "containerd-shim-embed-v1: exec %s: %s\n", server.c_str(),
               std::strerror(errno));
  return 127;
}
