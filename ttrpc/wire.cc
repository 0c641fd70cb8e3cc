#include "ttrpc/wire.h"

#include <cctype>

#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace ttrpc {

std::string EncodeRequestFrame(uint32_t stream_id, std::string_view service,
                               std::string_view method, std::string_view payload,
                               const Metadata& metadata, absl::Duration timeout) {
  Request req;
  req.set_service(std::string(service));
  req.set_method(std::string(method));
  req.set_payload(std::string(payload));
  if (timeout != absl::InfiniteDuration() && timeout > absl::ZeroDuration())
    req.set_timeout_nano(absl::ToInt64Nanoseconds(timeout));
  for (const auto& [k, v] : metadata) {
    KeyValue* kv = req.add_metadata();
    // Go's ttrpc looks keys up lower-cased: a mixed-case key would be lost.
    std::string key = k;
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    kv->set_key(key);
    kv->set_value(v);
  }
  return EncodeFrame(stream_id, MessageType::kRequest, req.SerializeAsString());
}

std::string EncodeResponseFrame(uint32_t stream_id, std::string_view payload) {
  Response resp;
  resp.set_payload(std::string(payload));
  return EncodeFrame(stream_id, MessageType::kResponse, resp.SerializeAsString());
}

std::string EncodeResponseFrame(uint32_t stream_id, const absl::Status& status) {
  Response resp;
  resp.mutable_status()->set_code(static_cast<int32_t>(status.code()));
  resp.mutable_status()->set_message(std::string(status.message()));
  return EncodeFrame(stream_id, MessageType::kResponse, resp.SerializeAsString());
}

absl::Status StatusOf(const Response& response) {
  if (!response.has_status() || response.status().code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(response.status().code()),
                      response.status().message());
}

std::optional<std::string_view> FindMetadata(const Metadata& md, std::string_view key) {
  for (const auto& [k, v] : md) {
    if (k == key) return v;
  }
  return std::nullopt;
}

}  // namespace ttrpc
