// Fuzzes `start`'s stdin (shim/manager/start_input.*): the options Any (containerd
// up to 2.2) or 2.3's BootstrapParams, told apart by their fields.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "shim/manager/start_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > shim::kMaxStartInput) return 0;  // ReadStartStdin refuses more
  static const shim::Flags flags = [] {
    shim::Flags f;
    f.namespace_ = "default";
    f.id = "c1";
    f.action = "start";
    return f;
  }();
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<shim::StartInput> input = shim::ParseStartInput(bytes, flags);
  if (input.ok() && input->bootstrap && input->options &&
      input->options->type_url().empty())
    __builtin_trap();  // an extension taken as options has a type
  return 0;
}
