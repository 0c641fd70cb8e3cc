// The explicit state machines of a container's processes: the init (one per
// container) and its execs. Every RPC or runtime outcome that changes a
// process is an Event; Transition() says whether it is legal in the current
// state and, if not, gives the error containerd expects (NotFound for a kill
// after exit, FailedPrecondition for a delete while running, ...). Nothing
// else decides a process's state.
//
// Init (runc-v2's init_state.go):
//
//              Created        Start           Started          Exit
//  creating ──────────▶ created ─────▶ starting ──────▶ running ─────▶ stopped
//                        │  ▲ StartFailed ┘   (Exit: held)  │ ▲           │
//                        │  └─────────────────┘       Pause │ │ Resume    │ Delete
//                        │                                  ▼ │           ▼
//                        ├──── Exit ──▶ stopped           paused ─Exit─▶ deleted
//                        └──── Delete ─────────────────────────────────▶ deleted
//
// Update (init only) leaves created, running and paused as they are; a
// stopped container cannot be updated (runc-v2's init_state.go).
//
// Exec (runc-v2's exec_state.go): creating is skipped (Exec only records
// it), and it has no pause of its own: it shows paused when its container is.
//
//          Start           Started          Exit            Delete
//  created ─────▶ starting ──────▶ running ─────▶ stopped ─────▶ deleted
//     │  ▲ StartFailed ┘   (Exit: held)
//     └──┴─────────────────────────── Delete ─────────────────────▶ deleted
//
// While a start is in flight (starting), an exit is held by the process and
// applied once the start's outcome is known, so TaskStart always goes out
// before TaskExit.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "shim/store/state.pb.h"

namespace shim::process {

// Every state a process or its persisted record can be in.
enum class Status { kCreating, kCreated, kStarting, kRunning, kPaused, kStopped, kDeleted };

enum class Event {
  kCreated,      // `runc create` succeeded
  kStart,        // a Start RPC begins `runc start` / `runc exec`
  kStarted,      // ... and it succeeded
  kStartFailed,  // ... and it failed
  kKill,
  kPause,
  kResume,
  kExit,  // the exit monitor saw the process exit
  kDelete,
  // `runc checkpoint` (init only, running or paused; the state stays: an
  // exit after a checkpoint that stops the container comes as kExit).
  kCheckpoint,
  kUpdate,  // `runc update` of the container's resources; the state stays
};

enum class Kind { kInit, kExec };

std::string_view Name(Status s);
std::string_view Name(Event e);

// The state after `event`, or the error to answer with.
absl::StatusOr<Status> Transition(Kind kind, Status from, Event event);

// containerd.v1.types.Status: UNKNOWN 0, CREATED 1, RUNNING 2, STOPPED 3, PAUSED 4.
int ToContainerdStatus(Status s);
embedshim::ProcessStatus ToRecord(Status s);
// A record's status as the state a recovered process is in; a start in
// flight was recorded as created.
Status FromRecord(embedshim::ProcessStatus s);

}  // namespace shim::process
