// Server: serves ttrpc requests on an EventLoop.
//
// It holds no sockets: its connections belong to someone else (in the shim,
// the keeper, through keeper::Link; in tests, a ttrpc::FramedConnection),
// who hands it whole frames and sends the frames it answers with. All of
// it runs on the loop thread. A handler is called on the loop
// thread and must not block: it replies at once, or hands the work to another
// thread and replies from there through its Responder. So a 50 ms runc call
// never delays other requests, and a Wait can stay pending for hours.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/event_loop.h"
#include "ttrpc/frame.h"
#include "ttrpc/types.h"

namespace ttrpc {

class ServerCore;

// The one-shot reply to a request. Copies share state; the first Reply()
// wins and later ones are ignored. Reply() is safe from any thread, also
// after the client went away or the deadline passed (the reply is dropped).
class Responder {
 public:
  void Reply(absl::StatusOr<std::string> payload) const;
  bool replied() const;

 private:
  friend class ServerCore;
  struct State;
  explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

using Handler =
    std::function<void(RequestContext ctx, std::string payload, Responder responder)>;

struct ServerOptions {
  // The limit the connection's owner enforces (an oversized frame reaches
  // the server as Frame::oversized); named in the error it answers.
  uint32_t max_message_size = kMaxMessageSize;
  // Where the server reports protocol errors and rejected peers.
  std::function<void(std::string_view)> log;
  // Called on the loop thread when a connection ends, for any reason.
  std::function<void(uint64_t connection_id)> on_disconnect;
};

class Server {
 public:
  using Options = ServerOptions;

  Server(base::EventLoop& loop, Options options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Handlers are looked up by (service, method); register before serving.
  void Register(std::string service, std::string method, Handler handler);

  // A connection whose bytes travel through its owner: the server gets
  // whole frames through OnRelayedFrame and hands its frames to `send`;
  // `close` asks the owner to close the real connection (after the frames
  // sent). Neither may call back into the Server. `tag` is the owner's,
  // passed on unread in RequestContext::connection_tag.
  struct Relay {
    std::function<void(std::string frame)> send;
    std::function<void()> close;
  };
  absl::Status AddRelayedConnection(uint64_t connection_id, std::string tag, ucred peer,
                                    Relay relay);
  // `flags` are the owner's, passed on unread in RequestContext::frame_flags.
  void OnRelayedFrame(uint64_t connection_id, Frame frame, uint32_t flags = 0);
  // The owner closed it (the client went away).
  void RemoveRelayedConnection(uint64_t connection_id);

  size_t connection_count() const;
  // Requests received and not yet answered, over all connections.
  size_t pending_requests() const;

 private:
  std::shared_ptr<ServerCore> core_;
};

}  // namespace ttrpc
