// The shim's command line. containerd uses Go's flag syntax (single dash,
// "-name value" or "-name=value"), then the action as the one positional
// argument: `-namespace NS -address A -publish-binary B -id ID [-debug] start`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace shim {

struct Flags {
  std::string namespace_;
  std::string address;         // containerd's gRPC socket
  std::string publish_binary;  // passed by containerd; unused (we Forward over ttrpc)
  std::string id;
  std::string bundle;
  bool debug = false;
  bool json = false;  // `ps --json`
  bool help = false;
  bool version = false;
  bool info = false;  // `-info`: containerd 2.x asks for a RuntimeInfo
  std::string action;  // start, delete, ps, serve, ...
};

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args);

}  // namespace shim
