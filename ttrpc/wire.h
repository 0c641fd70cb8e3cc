// Encoding of ttrpc's Request/Response envelopes into frames, and of
// google.rpc.Status codes to absl::Status (the numeric codes are the same).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ttrpc/types.h"

namespace ttrpc {

class Response;

std::string EncodeRequestFrame(uint32_t stream_id, std::string_view service,
                               std::string_view method, std::string_view payload,
                               const Metadata& metadata, absl::Duration timeout);
std::string EncodeResponseFrame(uint32_t stream_id, std::string_view payload);
std::string EncodeResponseFrame(uint32_t stream_id, const absl::Status& status);

// A Response's status as an absl::Status (OK when absent or code 0).
absl::Status StatusOf(const Response& response);

}  // namespace ttrpc
