// Fuzzes the keeper's upgrade state decoder (keeper/upgrade_state.*):
// any text decodes or is an error, and a state that decodes writes out as
// text that decodes to the same state.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "keeper/upgrade_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<keeper::UpgradeState> state = keeper::DecodeUpgradeState(text);
  if (!state.ok()) return 0;
  absl::StatusOr<std::string> encoded = keeper::EncodeUpgradeState(*state);
  if (!encoded.ok()) __builtin_trap();  // decoded, yet cannot be written
  absl::StatusOr<keeper::UpgradeState> again = keeper::DecodeUpgradeState(*encoded);
  if (!again.ok()) __builtin_trap();
  absl::StatusOr<std::string> twice = keeper::EncodeUpgradeState(*again);
  if (!twice.ok() || *twice != *encoded) __builtin_trap();
  return 0;
}
