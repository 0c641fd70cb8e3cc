// Fuzzes what a restarted server reads from events/<seq> (shim/task/event_publisher.*):
// DecodeSpooledEvent on arbitrary bytes. What it accepts is an event the
// shim could have spooled: a known topic, its event type, a namespace.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "shim/process/identifier.h"
#include "shim/store/paths.h"
#include "shim/task/event_publisher.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<shim::SpooledEvent> event = shim::DecodeSpooledEvent(bytes);
  if (!event.ok()) return 0;
  if (shim::EventTypeOf(event->topic).empty() || !shim::IsValidIdentifier(event->ns))
    __builtin_trap();
  return 0;
}
