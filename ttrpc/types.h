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
  // The label of the listener that accepted the connection (Server::Serve).
  std::string listener_label;
  // A relayed request that an earlier server may already have acted on
  // (its owner replays requests that were never answered).
  bool replayed = false;
};

}  // namespace ttrpc
