// The runtime options containerd sends with Create (and on `start`'s stdin),
// as this shim keeps them (embedshim::RuntimeOptions). Accepted types, every
// field decoded (docs/OPTIONS.md says what each one does here):
//   containerd.runc.v1.Options           all of its fields
//   containerd.linux.runc.RuncOptions    (Runtime, RuntimeRoot, CriuPath, SystemdCgroup)
//   containerd.linux.runc.CreateOptions  what containerd's Go client sends for a runtime
//                                        that is not runc's (NoPivotRoot, NoNewKeyring,
//                                        ShimCgroup, IoUid, IoGid, Criu*; the checkpoint
//                                        fields are ignored)
//   runtimeoptions.v1.Options            (ConfigPath: a TOML file with the runc.v1 keys,
//                                         what `ctr --runtime-config-path` and CRI send)
// Any other type is refused with InvalidArgument naming it.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "google/protobuf/any.pb.h"
#include "shim/oci/runc.h"
#include "shim/store/state.pb.h"

namespace shim {

absl::StatusOr<embedshim::RuntimeOptions> DecodeRuntimeOptions(
    const google::protobuf::Any& any);

// A runtime config file's text (runtimeoptions.v1.Options.config_path): the
// top-level keys of containerd.runc.v1.Options by their Go names
// (BinaryName = "crun", SystemdCgroup = true, IoUid = 1000, ...). Tables and
// other keys are skipped: the file may configure other things too. Bad TOML,
// or a known key of the wrong type, is InvalidArgument naming `source` (the
// file) and the line.
absl::StatusOr<embedshim::RuntimeOptions> ParseRuntimeConfig(std::string_view toml,
                                                             const std::string& source);

// Fills defaults: binary "runc", root "/run/containerd/runc".
embedshim::RuntimeOptions WithDefaults(embedshim::RuntimeOptions options);

// How to run the OCI runtime for a container: its options, with runc's root
// per namespace (as runc-v2 does) and its log in the bundle.
oci::RuncConfig RuncConfigFor(const embedshim::ContainerRecord& record);

// `create`'s flags from the options: --no-pivot, --no-new-keyring.
void ApplyCreateFlags(const embedshim::RuntimeOptions& options, oci::CreateOptions* create);

}  // namespace shim
