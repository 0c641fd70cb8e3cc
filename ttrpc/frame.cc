#include "ttrpc/frame.h"

#include <algorithm>
#include <cstring>

namespace ttrpc {
namespace {

void PutBe32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

uint32_t GetBe32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | u[3];
}

}  // namespace

void EncodeHeader(const FrameHeader& h, char out[kHeaderSize]) {
  PutBe32(out, h.length);
  PutBe32(out + 4, h.stream_id);
  out[8] = static_cast<char>(h.type);
  out[9] = static_cast<char>(h.flags);
}

FrameHeader DecodeHeader(const char in[kHeaderSize]) {
  return FrameHeader{GetBe32(in), GetBe32(in + 4), static_cast<uint8_t>(in[8]),
                     static_cast<uint8_t>(in[9])};
}

std::string EncodeFrame(uint32_t stream_id, MessageType type, std::string_view payload,
                        uint8_t flags) {
  std::string out(kHeaderSize + payload.size(), '\0');
  EncodeHeader({static_cast<uint32_t>(payload.size()), stream_id,
                static_cast<uint8_t>(type), flags},
               out.data());
  std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
  return out;
}

std::optional<Frame> FrameFromBytes(std::string bytes, bool oversized) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  FrameHeader header = DecodeHeader(bytes.data());
  return Frame{header, std::move(bytes), oversized};
}

std::string FrameDecoder::Buffered() const {
  if (!header_done_) return std::string(header_, have_);
  return current_.bytes;
}

void FrameDecoder::Feed(std::string_view bytes) {
  while (!bytes.empty()) {
    if (skip_ > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(skip_, bytes.size()));
      skip_ -= n;
      bytes.remove_prefix(n);
      continue;
    }
    if (!header_done_) {
      size_t n = std::min(kHeaderSize - have_, bytes.size());
      std::memcpy(header_ + have_, bytes.data(), n);
      have_ += n;
      bytes.remove_prefix(n);
      if (have_ < kHeaderSize) return;
      have_ = 0;
      current_ = Frame{DecodeHeader(header_), std::string(header_, kHeaderSize), false};
      if (current_.header.length > max_) {
        // Report it now; drop its payload as it streams past.
        current_.oversized = true;
        skip_ = current_.header.length;
        ready_.push_back(std::move(current_));
        continue;
      }
      header_done_ = true;
      // Grow with the bytes that arrive: a peer that sends only headers
      // must not make us allocate 4 MiB each.
      current_.bytes.reserve(kHeaderSize + std::min<uint32_t>(current_.header.length, 64 * 1024));
      if (current_.header.length == 0) {  // complete without payload bytes
        header_done_ = false;
        ready_.push_back(std::move(current_));
        continue;
      }
    }
    size_t want = kHeaderSize + current_.header.length - current_.bytes.size();
    size_t n = std::min(want, bytes.size());
    current_.bytes.append(bytes.data(), n);
    bytes.remove_prefix(n);
    if (current_.bytes.size() == kHeaderSize + current_.header.length) {
      header_done_ = false;
      ready_.push_back(std::move(current_));
    }
  }
}

}  // namespace ttrpc
