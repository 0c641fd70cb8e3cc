// The runtime options containerd sends with Create (and on `start`'s stdin),
// reduced to what this shim honours. Accepted types:
//   containerd.runc.v1.Options           (BinaryName, Root, SystemdCgroup, NoPivotRoot, NoNewKeyring)
//   containerd.linux.runc.RuncOptions    (Runtime, RuntimeRoot, SystemdCgroup)
//   containerd.linux.runc.CreateOptions  (NoPivotRoot, NoNewKeyring)
//   runtimeoptions.v1.Options            (ConfigPath: a TOML file with the runc.v1 keys,
//                                         what `ctr --runtime-config-path` and CRI send)
#pragma once

#include "absl/status/statusor.h"
#include "google/protobuf/any.pb.h"
#include "shim/oci/runc.h"
#include "shim/state.pb.h"

namespace shim {

absl::StatusOr<embedshim::RuntimeOptions> DecodeRuntimeOptions(
    const google::protobuf::Any& any);

// Fills defaults: binary "runc", root "/run/containerd/runc".
embedshim::RuntimeOptions WithDefaults(embedshim::RuntimeOptions options);

// How to run the OCI runtime for a container: its options, with runc's root
// per namespace (as runc-v2 does) and its log in the bundle.
oci::RuncConfig RuncConfigFor(const embedshim::ContainerRecord& record);

}  // namespace shim
