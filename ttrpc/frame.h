// The ttrpc frame: a 10-byte header (big-endian length, big-endian stream id,
// message type, flags) followed by `length` bytes of payload.
//
// This file knows nothing of protobuf, so a process that only moves whole
// frames (the keeper) can use it without linking the envelope code.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace ttrpc {

inline constexpr size_t kHeaderSize = 10;
// containerd's ttrpc allows payloads of up to and including 4 MiB.
inline constexpr uint32_t kMaxMessageSize = 4u << 20;

enum class MessageType : uint8_t {
  kRequest = 0x01,
  kResponse = 0x02,
  kData = 0x03,  // ttrpc >= 1.2 streams; never used by the Task API
};

struct FrameHeader {
  uint32_t length = 0;
  uint32_t stream_id = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
};

void EncodeHeader(const FrameHeader& header, char out[kHeaderSize]);
FrameHeader DecodeHeader(const char in[kHeaderSize]);

// Header plus payload, ready to write.
std::string EncodeFrame(uint32_t stream_id, MessageType type,
                        std::string_view payload, uint8_t flags = 0);

// A whole frame as it travelled: `bytes` is the header followed by the
// payload, so a process that only moves frames passes them on unchanged.
struct Frame {
  FrameHeader header;
  std::string bytes;
  // The declared length exceeded the limit: `bytes` holds only the header.
  bool oversized = false;

  std::string_view payload() const {
    return std::string_view(bytes).substr(std::min(bytes.size(), kHeaderSize));
  }
};

// A frame from bytes that travelled whole (header and payload, or only the
// header of an oversized frame). nullopt if shorter than a header.
std::optional<Frame> FrameFromBytes(std::string bytes, bool oversized = false);

// Turns a byte stream into frames. Bytes may arrive split anywhere; whole
// frames come out in order. An oversized frame is reported once, with its
// header, and its payload is skipped as it arrives, so the stream stays in sync.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_message_size = kMaxMessageSize)
      : max_(max_message_size) {}

  void Feed(std::string_view bytes);
  std::optional<Frame> Next() {
    if (ready_.empty()) return std::nullopt;
    Frame f = std::move(ready_.front());
    ready_.pop_front();
    return f;
  }
  // True while a frame has been started but not finished.
  bool Partial() const { return have_ > 0 || skip_ > 0 || header_done_; }
  // The bytes of a started, unfinished frame, as they arrived: feeding them
  // to a fresh decoder continues where this one stopped (the keeper hands
  // them to its next incarnation). Not for a frame being skipped.
  std::string Buffered() const;

 private:
  uint32_t max_;
  char header_[kHeaderSize];
  size_t have_ = 0;  // header bytes held
  bool header_done_ = false;
  Frame current_;
  uint64_t skip_ = 0;  // payload bytes of an oversized frame still to drop
  std::deque<Frame> ready_;
};

}  // namespace ttrpc
