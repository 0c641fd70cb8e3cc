// The stdout/stderr of CreateTaskRequest and ExecProcessRequest, read as
// runc-v2 reads them (Go's net/url): a plain absolute path (a fifo, or any
// file), file:///path or binary:///path?key=value.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace shim::oci {

struct StdioUri {
  std::string scheme;  // lower case; "" for a plain path
  std::string path;    // percent-decoded; the host part, if any, is ignored (as Go's u.Path)
  // Query pairs in the URI's order, decoded as url.ParseQuery does ('+' is a
  // space); a key without '=' has the value "".
  std::vector<std::pair<std::string, std::string>> query;
};

// InvalidArgument (naming `uri`) for what is neither an absolute path nor a
// URI, or has a bad %-escape.
absl::StatusOr<StdioUri> ParseStdioUri(std::string_view uri);

}  // namespace shim::oci
