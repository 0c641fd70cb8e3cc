// Link: the server's end of the keeper channel. Connections the keeper
// accepted become relayed connections of the ttrpc server; frames go both
// ways whole. Listening sockets and fds that must outlive this process are
// handed to the keeper.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "keeper/channel.h"
#include "ttrpc/server.h"

namespace keeper {

// What the keeper attaches to a request it relays (ttrpc::RequestContext):
// the label of the listener that accepted the connection ("" for the main
// socket, else the namespace the socket is for), ...
inline const std::string& ListenerLabel(const ttrpc::RequestContext& ctx) {
  return ctx.connection_tag;
}
// ... and whether it is replayed: an earlier server may already have acted
// on it (the keeper replays requests that were never answered).
inline bool Replayed(const ttrpc::RequestContext& ctx) {
  return (ctx.frame_flags & kFrameReplayed) != 0;
}

class Link {
 public:
  Link(base::EventLoop& loop, base::UniqueFd channel, ttrpc::Server& server);
  // Reads the keeper's hello (listeners, connections) before returning, so
  // the server knows what exists before it serves.
  absl::Status Start();

  // Namespaces whose socket the keeper already listens on.
  const absl::flat_hash_set<std::string>& listening() const { return listening_; }

  // Terminal relays the keeper holds (by the names given to RelayTty), as
  // its hello told: a new server can drop those it has no process for.
  const absl::flat_hash_set<std::string>& ttys() const { return ttys_; }

  void Listen(const std::string& label, base::UniqueFd listener);
  void Keep(const std::string& name, base::UniqueFd fd);
  void Drop(const std::string& name);
  void Ready();

  // Terminals: the keeper copies a pty master's output to `out` and `in`'s
  // bytes to the master, and goes on through server restarts and upgrades
  // (keeper/tty_relay.h). `name` is the server's own, e.g.
  // "tty/<ns>/<id>/<exec-id>". `in` is the stdin fifo's read end, `out` the
  // stdout fifo opened O_RDWR; either may be invalid. All three fds travel
  // in one message, so a server killed meanwhile leaves no half a relay.
  // When every slave end has closed, the keeper writes what it holds and
  // closes `out` (the reader sees EOF). These four are fire-and-forget and
  // idempotent; the keeper ignores a name it does not hold, and a RelayTty
  // for a name it holds (the fds are closed).
  void RelayTty(const std::string& name, base::UniqueFd master, base::UniqueFd in,
                base::UniqueFd out);
  // TIOCSWINSZ on the master.
  void ResizeTty(const std::string& name, uint32_t width, uint32_t height);
  // Stops copying stdin and closes it, then writes the terminal's VEOF
  // character to the master: in canonical mode the program reads EOF.
  void CloseTtyInput(const std::string& name);
  // Closes everything of that relay and forgets the name (after the
  // process is deleted).
  void DropTty(const std::string& name);
  // Asks the keeper to re-exec itself and restart the server from the
  // installed binary. Sent after whatever this loop turn still sends.
  void Upgrade();
  // Asks the keeper to close its listeners and leave; returns once it has
  // (channel EOF) or after a few seconds.
  void ShutdownAndWait();

  // The keeper died: connections are gone, containerd will clean up.
  void SetOnKeeperGone(std::function<void()> fn) { on_gone_ = std::move(fn); }

 private:
  void OnReadable();
  bool hello_done_ = false;
  void Send(keeper::Msg msg);

  base::EventLoop& loop_;
  base::UniqueFd channel_;
  ttrpc::Server& server_;
  absl::flat_hash_set<std::string> listening_;
  absl::flat_hash_set<std::string> ttys_;
  std::function<void()> on_gone_;
};

}  // namespace keeper
