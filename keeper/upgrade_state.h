// The state one keeper hands the next across execve on a live upgrade
// (Keeper::Upgrade writes it into a memfd, Keeper::Resume reads it): every
// listener, connection, unanswered request, kept fd and terminal relay, by
// fd number (the fds themselves survive execve).
//
// Text, one line per thing, words separated by one space; bytes as
// lowercase hex, "-" for empty:
//
//   embedshim-keeper-state 1
//   next <next conn id> <next request seq>
//   listener <fd> <label> <socket path>
//   conn <fd> <id> <peer uid> <peer pid> <label> <unsent hex> <half-read hex>
//   pending <seq> <conn id> <stream> <frame hex>
//   kept <fd> <name>
//   tty <name hex> <master fd> <stdin fd> <stdout fd> <0|1> <to-out hex> <to-master hex>
//   end <number of lines between the first and this one>
//
// The header names the version; "end" makes a truncated state an error.
// Version 0 is what keepers before versioning wrote: the same lines, no
// header and no "end" (kept readable so they can upgrade to this one). A
// keeper of version 0 reading version 1 ignores the two lines it does not
// know.
//
// Decoding checks everything it can without looking at the process: a
// state that decodes names no fd twice, never fd 0-2, no connection id or
// request seq twice, and no id or seq the counters would hand out again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "keeper/tty_relay.h"

namespace keeper {

inline constexpr int kUpgradeStateVersion = 1;

struct UpgradeState {
  struct Listener {
    int fd = -1;
    std::string label;  // the namespace it serves; "" for the main socket
    std::string path;
  };
  struct Conn {
    int fd = -1;
    uint64_t id = 0;
    uint32_t peer_uid = 0;
    int32_t peer_pid = 0;
    std::string label;
    std::string out;      // bytes not yet written to the client
    std::string partial;  // a frame read in part
  };
  struct Pending {
    uint64_t seq = 0;
    uint64_t conn = 0;
    uint32_t stream = 0;
    std::string frame;
  };
  struct Kept {
    int fd = -1;
    std::string name;
  };

  uint64_t next_conn = 1;
  uint64_t next_seq = 1;
  std::vector<Listener> listeners;
  std::vector<Conn> conns;
  std::vector<Pending> pending;
  std::vector<Kept> kept;
  std::vector<TtyRelay::Saved> ttys;
};

// The state as text of kUpgradeStateVersion. InvalidArgument when a label,
// path or name cannot be one word (empty is fine): then there is no upgrade.
absl::StatusOr<std::string> EncodeUpgradeState(const UpgradeState& state);

// The state `text` holds. DataLoss, naming the line and what is wrong, for
// an unknown version, a bad number, hex or fd, a missing or extra word, an
// unknown line, a truncated state or anything after its end.
absl::StatusOr<UpgradeState> DecodeUpgradeState(std::string_view text);

// Every fd the state names (terminals' absent ones left out).
std::vector<int> FdsOf(const UpgradeState& state);

}  // namespace keeper
