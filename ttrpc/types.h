// Request metadata and per-request context shared by the server and client.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace ttrpc {

// Ordered key/value pairs; keys are lower-case, as ttrpc's MD makes them.
using Metadata = std::vector<std::pair<std::string, std::string>>;

std::optional<std::string_view> FindMetadata(const Metadata& md, std::string_view key);

struct RequestContext {
  uint64_t connection_id = 0;
  uint32_t stream_id = 0;
  std::string service;
  std::string method;
  Metadata metadata;
  absl::Time deadline = absl::InfiniteFuture();
  ucred peer{};
  // What the connection's owner attached to the connection and to this
  // request's frame (Server::AddRelayedConnection, OnRelayedFrame); the
  // server passes them on unread. keeper/link.h says what the keeper's mean.
  std::string connection_tag;
  uint32_t frame_flags = 0;
};

}  // namespace ttrpc
