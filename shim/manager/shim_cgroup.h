// ShimCgroup: the cgroup containerd asks a runc-v2 shim to run in (the
// runtime options' shim_cgroup, sent on `start`'s stdin). runc-v2 moves each
// per-container shim there. This shim serves every container of a
// containerd, so the `start` that launches it joins the ShimCgroup of the
// options it was given, and the keeper and server it forks inherit it. Later
// containers' ShimCgroup cannot move a shared shim: it is only logged
// (docs/OPTIONS.md).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/any.pb.h"

namespace shim {

// The ShimCgroup of the runtime options containerd sent on `start`'s stdin
// (shim/manager/start_input.h reads them). "" when they have none, or are of a type
// this shim does not decode; `why` then says so.
std::string ShimCgroupOf(const google::protobuf::Any& options, std::string* why);

// Moves the calling process into `cgroup`, a path from the cgroup root as
// runc-v2 takes it ("/podruntime/shim"): with cgroup v2, <root>/<cgroup>;
// with v1, that path in every hierarchy mounted under `root` that has it.
// NotFound when no hierarchy has it.
absl::Status JoinCgroup(const std::string& cgroup, const std::string& root = "/sys/fs/cgroup");

}  // namespace shim
