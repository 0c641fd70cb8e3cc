// TtyRelay: the copy of one terminal's bytes, in the keeper.
//
// A process with a terminal writes into a pty, not into containerd's fifos:
// runc hands the pty master to the shim, and somebody must copy master ->
// stdout fifo and stdin fifo -> master. The keeper does it because it
// outlives the server: a killed server loses no byte, and on an upgrade the
// relay's fds and buffered bytes go to the next keeper (Saved).
//
// Every fd is non-blocking on the keeper's one loop. Each direction has a
// bounded buffer. While a destination is full its source is not read, and is
// off the loop so that a hung-up source cannot spin it; no byte is dropped.
// When the master reports EIO (every slave end closed: the process and its
// children are gone), what is buffered is written, then stdout is closed so
// that its reader sees EOF, and the relay has ended.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"

namespace keeper {

class TtyRelay {
 public:
  // Bytes buffered per direction before the source waits.
  static constexpr size_t kBufferSize = 64 * 1024;

  // What an upgrade hands to the next keeper; an absent fd is -1.
  struct Saved {
    std::string name;
    int master = -1;
    int in = -1;
    int out = -1;
    bool close_input = false;  // CloseInput() was called
    std::string to_out;     // read from the master, not yet written to out
    std::string to_master;  // read from in (and VEOF), not yet written to the master
  };

  // `in` is the stdin fifo's read end; `out` the stdout fifo opened O_RDWR
  // (so it never gets EPIPE while its reader is away) or a file. Either may
  // be invalid: without `out` the output is read and dropped, so that the
  // program never blocks on a full terminal.
  TtyRelay(base::EventLoop& loop, std::string name, base::UniqueFd master, base::UniqueFd in,
           base::UniqueFd out);
  // Takes its fds off the loop and closes them.
  ~TtyRelay();
  TtyRelay(const TtyRelay&) = delete;
  TtyRelay& operator=(const TtyRelay&) = delete;

  // Makes the fds non-blocking and puts them on the loop.
  void Start();
  // TIOCSWINSZ on the master.
  void Resize(uint32_t width, uint32_t height);
  // Reads what stdin holds now, then closes it and writes the terminal's
  // VEOF character to the master after the rest (in canonical mode, the
  // program's next read returns 0). Once only.
  void CloseInput();

  const std::string& name() const { return name_; }
  // The master is done and the output written (or dropped) and closed.
  bool ended() const { return !master_ && !out_; }

  // The state to hand over; the fds stay open and owned here.
  Saved Save() const;
  // The relay from an earlier keeper's Saved, started. An error if one of
  // its fds is not open here; then no fd of `saved` is owned.
  static absl::StatusOr<std::unique_ptr<TtyRelay>> Restore(base::EventLoop& loop, Saved saved);

 private:
  // An fd on the loop for exactly the events it needs now (0: off the loop).
  struct Watched {
    base::UniqueFd fd;
    uint32_t events = 0;
    explicit operator bool() const { return fd.valid(); }
  };

  void OnMaster(uint32_t events);
  void OnIn(uint32_t events);
  void OnOut(uint32_t events);
  void ReadMaster();
  void ReadIn(bool hung_up);
  void WriteOut();
  void WriteMaster();
  void MasterDone();
  void CloseIn();
  void QueueEof();
  // Puts each fd on the loop for what it needs now; ends the relay when
  // the master is done and the output written.
  void Update();
  void Watch(Watched& w, uint32_t wanted, void (TtyRelay::*handler)(uint32_t));
  void Close(Watched& w);

  base::EventLoop& loop_;
  std::string name_;
  Watched master_;
  Watched in_;
  Watched out_;
  bool close_input_ = false;
  std::string to_out_;
  std::string to_master_;
};

}  // namespace keeper
