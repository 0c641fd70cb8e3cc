// What containerd writes on `start`'s stdin. Up to 2.2: the runtime options
// as a google.protobuf.Any, or nothing. From 2.3: a BootstrapParams (the
// task's id and namespace, containerd's version and addresses, the options
// among its extensions). Each also parses as the other: a BootstrapParams
// read as an Any has type_url = the id and value = the namespace, and an Any
// read as a BootstrapParams has instance_id = its type URL. So the bytes
// are a BootstrapParams only when its instance_id and namespace are start's
// own -id and -namespace; otherwise they must be an Any, and nothing more
// (an Any has no fields past 2; a BootstrapParams has its version and more).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "google/protobuf/any.pb.h"
#include "shim/manager/bootstrap.pb.h"
#include "shim/manager/flags.h"

namespace shim {

struct StartInput {
  // The runtime options, if containerd sent any.
  std::optional<google::protobuf::Any> options;
  // containerd 2.3+.
  std::optional<containerd::runtime::bootstrap::v1::BootstrapParams> bootstrap;
};

// `bytes` is all of stdin. InvalidArgument if it is neither.
absl::StatusOr<StartInput> ParseStartInput(std::string_view bytes, const Flags& flags);

// All of stdin (fd) up to its end of file; "" when it is a terminal
// (`start` run by hand). A writer that neither writes nor closes for
// `timeout_ms`, or more than kMaxStartInput bytes, is an error: start must
// not hang or grow on what is not containerd.
inline constexpr size_t kMaxStartInput = 1 << 20;
absl::StatusOr<std::string> ReadStartStdin(int fd = 0, int timeout_ms = 2000);

}  // namespace shim
