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

namespace keeper {

struct Config {
  std::vector<std::string> self_argv;    // to re-exec the keeper (upgrade)
  std::string socket_path;               // the main socket, created here
  std::vector<std::string> server_argv;  // how to start a server
  int ready_fd = -1;                     // written once the first server serves
};

class Keeper {
 public:
  Keeper(base::EventLoop& loop, Config config);
  absl::Status Start();
  // Continues from a state an earlier keeper handed over through `state_fd`
  // (see Upgrade), instead of Start().
  absl::Status Resume(int state_fd);
  // Stops the server and leaves (SIGTERM): containers keep running.
  void Stop();

 private:
  struct Listener {
    base::UniqueFd fd;
    std::string label;
    std::string path;
  };
  struct Conn {
    uint64_t id = 0;
    base::UniqueFd fd;
    std::string label;
    ucred peer{};
    ttrpc::FrameDecoder decoder;
    std::string out;
    bool close_after_flush = false;
  };
  struct Pending {  // a request the server has not answered yet
    uint64_t conn;
    uint32_t stream;
    std::string frame;
  };

  absl::Status AddListener(base::UniqueFd fd, std::string label);
  void Accept(Listener& l);
  void OnConn(uint64_t id, uint32_t events);
  void OnFrameFromClient(Conn& c, ttrpc::Frame frame);
  void WriteToClient(Conn& c, std::string_view bytes);
  void CloseConn(uint64_t id, bool tell_server);

  void SpawnServer();
  void OnServerExit();
  void OnChannel();
  void OnServerMsg(Msg msg);
  void OnTtyMsg(Msg msg);
  void ToServer(Msg msg);
  // Stops the server, writes every fd and buffer into a memfd and re-execs
  // the keeper binary now installed; the new one Resume()s and starts a
  // server from the new binary. Connections never notice.
  void Upgrade();
  void StopServerAndWait();
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
