// KeeperLink: the server's end of the keeper channel. Connections the keeper
// accepted become relayed connections of the ttrpc server; frames go both
// ways whole. Listening sockets and fds that must outlive this process are
// handed to the keeper.
#pragma once

#include <functional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "base/unique_fd.h"
#include "shim/keeper/channel.h"
#include "ttrpc/event_loop.h"
#include "ttrpc/server.h"

namespace shim {

class KeeperLink {
 public:
  KeeperLink(ttrpc::EventLoop& loop, base::UniqueFd channel, ttrpc::Server& server);
  // Reads the keeper's hello (listeners, connections) before returning, so
  // the server knows what exists before it serves.
  absl::Status Start();

  // Namespaces whose socket the keeper already listens on.
  const absl::flat_hash_set<std::string>& listening() const { return listening_; }

  void Listen(const std::string& label, base::UniqueFd listener);
  void Keep(const std::string& name, base::UniqueFd fd);
  void Drop(const std::string& name);
  void Ready();
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

  ttrpc::EventLoop& loop_;
  base::UniqueFd channel_;
  ttrpc::Server& server_;
  absl::flat_hash_set<std::string> listening_;
  std::function<void()> on_gone_;
};

}  // namespace shim
