// Fuzzes the runtime options decoders (shim/process/runtime_options.*): the Any of
// Create and `start` as each type containerd sends, and the TOML config
// file. The first byte picks which; the rest is the value or the text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/any.pb.h"
#include "shim/process/runtime_options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr const char* kTypes[] = {
      "containerd.runc.v1.Options",
      "type.googleapis.com/containerd.runc.v1.Options",
      "containerd.linux.runc.RuncOptions",
      "containerd.linux.runc.CreateOptions",
      "runtimeoptions.v1.Options",
      "acme.Options",
  };
  constexpr size_t kChoices = sizeof kTypes / sizeof kTypes[0] + 1;
  const size_t pick = data[0] % kChoices;
  std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  absl::StatusOr<embedshim::RuntimeOptions> options;
  if (pick == kChoices - 1) {
    options = shim::ParseRuntimeConfig(rest, "fuzz.toml");
  } else {
    google::protobuf::Any any;
    any.set_type_url(kTypes[pick]);
    any.set_value(rest);
    options = shim::DecodeRuntimeOptions(any);
  }
  if (options.ok()) {
    embedshim::RuntimeOptions filled = shim::WithDefaults(*options);
    if (filled.binary_name().empty() || filled.root().empty()) __builtin_trap();
  }
  return 0;
}
