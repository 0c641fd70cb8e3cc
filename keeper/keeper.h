// The keeper: a small process that owns what must outlive the server.
//
// It holds the listening sockets, every accepted connection, the fds the
// server asks it to keep (stdin keepalives), and copies terminals' bytes
// (TtyRelay: the pty master <-> containerd's fifos). It reads whole ttrpc frames from
// connections and relays them to the server over a SOCK_SEQPACKET channel,
// and writes the server's whole frames back. It remembers each request until
// its response passes through, so when the server dies it starts a new one,
// tells it about every connection and replays the unanswered requests:
// containerd sees a slow answer, never a closed connection.
//
// It knows frames, not their contents: no protobuf, no JSON, no runc.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "keeper/channel.h"
#include "keeper/tty_relay.h"
#include "keeper/upgrade_state.h"
#include "ttrpc/frame.h"
#include "ttrpc/framed_connection.h"

namespace keeper {

struct Config {
  std::vector<std::string> self_argv;    // to re-exec the keeper (upgrade)
  std::string socket_path;               // the main socket, created here
  std::vector<std::string> server_argv;  // how to start a server
  base::UniqueFd ready_fd;                // written once the first server serves
};

class Keeper {
 public:
  Keeper(base::EventLoop& loop, Config config);
  absl::Status Start();
  // Continues from a state an earlier keeper handed over through `state`
  // (see Upgrade), instead of Start().
  absl::Status Resume(base::UniqueFd state);
  // Stops the server and leaves (SIGTERM): containers keep running.
  void Stop();

 private:
  struct Listener {
    base::UniqueFd fd;
    std::string label;
    std::string path;
  };
  struct Conn {
    std::unique_ptr<ttrpc::FramedConnection> io;
    std::string label;  // of the listener that accepted it
    ucred peer{};
  };
  struct Pending {  // a request the server has not answered yet
    uint64_t conn;
    uint32_t stream;
    std::string frame;
  };

  // Client connections (client_connections.cc).
  absl::Status AddListener(base::UniqueFd fd, std::string label);
  void Accept(Listener& l);
  // Holds a connection; `unsent` and `partial` continue a resumed one.
  absl::Status AddConn(uint64_t id, base::UniqueFd fd, std::string label,
                       std::string unsent = {}, std::string_view partial = {});
  void OnFrameFromClient(uint64_t id, ttrpc::Frame frame);
  // A whole frame the server answered with: passed on as it is.
  void FrameToClient(uint64_t id, std::string frame);
  void CloseConn(uint64_t id, bool tell_server);

  // The server (server_supervisor.cc).
  void SpawnServer();
  void OnServerExit();
  void StopServerAndWait();

  // The channel's messages (keeper.cc).
  void OnChannel();
  void OnServerMsg(Msg msg);
  void OnTtyMsg(Msg msg);
  void ToServer(Msg msg);

  // The upgrade (upgrade.cc). Stops the server, writes every fd and buffer into a memfd and re-execs
  // the keeper binary now installed; the new one Resume()s and starts a
  // server from the new binary. Connections never notice.
  void Upgrade();
  // Takes over what a decoded, checked upgrade state names.
  void ResumeFrom(UpgradeState state);

  base::EventLoop& loop_;
  Config config_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, Conn> conns_;
  uint64_t next_conn_ = 1;

  std::map<uint64_t, Pending> pending_;  // by arrival order: replayed in order
  absl::flat_hash_map<uint64_t, absl::flat_hash_map<uint32_t, uint64_t>> pending_index_;
  uint64_t next_seq_ = 1;

  std::map<std::string, base::UniqueFd> kept_;
  // By the server's name for each; an ended relay stays until kTtyDrop.
  std::map<std::string, std::unique_ptr<TtyRelay>> ttys_;

  pid_t server_pid_ = -1;
  base::UniqueFd server_pidfd_;
  base::UniqueFd channel_;
  int quick_deaths_ = 0;  // servers in a row that died before serving
  bool server_served_ = false;
  bool shutting_down_ = false;
  bool upgrading_ = false;
};

}  // namespace keeper
