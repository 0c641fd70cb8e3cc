// Client: ttrpc calls over one connection, driven by an EventLoop.
//
// Calls may be issued from any thread and run concurrently on the one
// connection; each completes through its callback on the loop thread.
// BlockingClient wraps a Client and a loop thread of its own, for tools,
// tests and the short-lived subcommands.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"
#include "ttrpc/frame.h"
#include "ttrpc/types.h"

namespace ttrpc {

struct CallOptions {
  Metadata metadata;
  // Sent as timeout_nano and enforced here too.
  absl::Duration timeout = absl::InfiniteDuration();
};

struct ClientOptions {
  uint32_t max_message_size = kMaxMessageSize;
  std::function<void(std::string_view)> log;
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  using Options = ClientOptions;
  using Callback = std::function<void(absl::StatusOr<std::string>)>;

  // Connects to a filesystem unix socket ("unix://" prefix allowed).
  static absl::StatusOr<std::shared_ptr<Client>> Connect(base::EventLoop& loop,
                                                         std::string_view address,
                                                         Options options = {});
  // Uses an already-connected socket.
  static std::shared_ptr<Client> Adopt(base::EventLoop& loop, base::UniqueFd fd,
                                       Options options = {});
  ~Client();

  void Call(std::string service, std::string method, std::string payload,
            CallOptions options, Callback done);
  // Fails every pending call with Unavailable. Safe from any thread.
  void Close();
  // Called once, on the loop thread, when the connection ends.
  void SetOnClose(std::function<void(absl::Status)> on_close);
  bool closed() const { return closed_.load(); }
  // Responses that matched no pending call (ignored, as ttrpc does).
  uint64_t unmatched_responses() const { return unmatched_.load(); }

 private:
  Client(base::EventLoop& loop, base::UniqueFd fd, Options options);
  void Start();
  void StartCall(std::string service, std::string method, std::string payload,
                 CallOptions options, Callback done);
  void OnEvents(uint32_t events);
  void OnFrame(Frame frame);
  void Write(std::string bytes);
  void Fail(uint32_t stream, absl::Status status);
  void CloseWith(absl::Status status);
  void RunOnLoop(std::function<void()> fn);

  struct Pending {
    Callback done;
    base::EventLoop::TimerId timer = 0;
  };

  base::EventLoop& loop_;
  base::UniqueFd fd_;
  Options options_;
  FrameDecoder decoder_;
  std::string out_;
  uint32_t next_stream_ = 1;  // client streams are odd: 1, 3, 5, ...
  absl::flat_hash_map<uint32_t, Pending> pending_;
  std::function<void(absl::Status)> on_close_;
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> unmatched_{0};
};

class BlockingClient {
 public:
  static absl::StatusOr<std::unique_ptr<BlockingClient>> Connect(
      std::string_view address, ClientOptions options = {});
  ~BlockingClient();

  absl::StatusOr<std::string> Call(std::string service, std::string method,
                                   std::string payload, CallOptions options = {});

  // Protobuf convenience: serialises `req`, parses the reply into Resp.
  template <class Resp, class Req>
  absl::StatusOr<Resp> Call(std::string service, std::string method, const Req& req,
                            CallOptions options = {}) {
    absl::StatusOr<std::string> raw =
        Call(std::move(service), std::move(method), req.SerializeAsString(), std::move(options));
    if (!raw.ok()) return raw.status();
    Resp resp;
    if (!resp.ParseFromString(*raw))
      return absl::InternalError(absl::StrCat("cannot decode ", Resp::descriptor()->full_name()));
    return resp;
  }

  Client& client() { return *client_; }

 private:
  BlockingClient() = default;
  std::unique_ptr<base::EventLoop> loop_;
  std::shared_ptr<Client> client_;
  std::thread thread_;
};

}  // namespace ttrpc
