// Fuzzes the frame decoder (arbitrary bytes, arbitrary read splits) and the
// decoding of what a frame carries: the ttrpc Request, and in it the Task API
// requests the shim will parse.
#include <cstddef>
#include <cstdint>

#include "shim.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the read size, so splits land anywhere.
  size_t chunk = static_cast<size_t>(data[0]) + 1;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  ttrpc::FrameDecoder decoder(64 * 1024);
  while (!bytes.empty()) {
    size_t n = std::min(chunk, bytes.size());
    decoder.Feed(bytes.substr(0, n));
    bytes.remove_prefix(n);
    while (auto frame = decoder.Next()) {
      if (frame->oversized) continue;
      ttrpc::Request req;
      const std::string_view payload = frame->payload();
      if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) continue;
      containerd::task::v2::CreateTaskRequest create;
      (void)create.ParseFromString(req.payload());
      containerd::task::v2::KillRequest kill;
      (void)kill.ParseFromString(req.payload());
    }
  }
  return 0;
}
