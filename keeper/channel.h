// The channel between the keeper and the server: a SOCK_SEQPACKET pair, one
// message per datagram, so a message is delivered whole or not at all. An fd
// travels with its message (SCM_RIGHTS), up to kMaxFds of them, so a message
// that needs several fds arrives with all or none. No protobuf: the keeper
// stays small.
//
// Layout: type u8 | conn u64 | arg u32 | text_len u32 | text | data
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace keeper {

enum class MsgType : uint8_t {
  // keeper -> server
  kConnOpen = 1,   // conn, arg = peer uid, text = listener label
  kListening = 2,  // text = a label the keeper already listens for
  kHelloDone = 5,  // the keeper has told a new server all it had to
  kTtyKnown = 6,   // text = the name of a terminal relay the keeper holds
  // both ways
  kFrame = 3,       // conn, data = one whole ttrpc frame; arg: kFrameFlag*
  kConnClosed = 4,  // conn: the client went away / please close it
  // server -> keeper
  kListenFd = 10,  // text = label, fd = a listening socket to serve
  kKeepFd = 11,    // text = name, fd = keep it open across server restarts
  kDropFd = 12,    // text = name: close it
  kReady = 13,     // the server serves
  kShutdown = 14,  // idle: close listeners, remove their socket files, exit
  kUpgrade = 15,   // re-exec the keeper binary, then restart the server
  // Terminals (keeper/tty_relay.h); text = the relay's name. All are
  // idempotent, and a name the keeper does not know is ignored.
  kTtyRelay = 16,     // fds = master[, stdin read end][, stdout]; arg: kTtyHas*
  kTtyResize = 17,    // arg = width (columns), conn = height (rows)
  kTtyCloseIn = 18,   // stop copying stdin, then send the terminal's VEOF
  kTtyDrop = 19,      // close everything of that relay, forget the name
};

inline constexpr uint32_t kTtyHasIn = 1;   // kTtyRelay carries a stdin fd
inline constexpr uint32_t kTtyHasOut = 2;  // kTtyRelay carries a stdout fd

inline constexpr uint32_t kFrameOversized = 1;  // header only: too large to keep
inline constexpr uint32_t kFrameReplayed = 2;   // an earlier server may have seen it

struct Msg {
  MsgType type = MsgType::kFrame;
  uint64_t conn = 0;
  uint32_t arg = 0;
  std::string text;
  std::string data;
  std::vector<base::UniqueFd> fds;
};

inline constexpr size_t kMaxFds = 3;

// A frame of up to 4 MiB plus the message header must fit in one datagram.
inline constexpr size_t kMaxMsgSize = (4u << 20) + 64 * 1024;

// A connected SOCK_SEQPACKET pair with buffers large enough for kMaxMsgSize.
absl::Status MakeChannel(base::UniqueFd& a, base::UniqueFd& b);
absl::Status SendMsg(int sock, const Msg& msg);
// nullopt when nothing is waiting (EAGAIN); an error when the peer is gone.
absl::StatusOr<std::optional<Msg>> RecvMsg(int sock);

// The message one datagram holds, fds apart (RecvMsg's decoding). DataLoss
// for one shorter than the header or whose text runs past its end. The type
// is not checked: each side ignores types it does not handle.
absl::StatusOr<Msg> DecodeMsg(std::string_view datagram);

}  // namespace keeper
