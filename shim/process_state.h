// The explicit state machine of a container's process. Every RPC that
// changes a process is an event; Transition() says whether it is legal in the
// current state and, if not, gives the error containerd expects (NotFound for
// a kill after exit, FailedPrecondition for a delete while running, ...).
//
//            Start            Exit             Delete
//  created ───────▶ running ───────▶ stopped ───────▶ deleted
//     │  ▲            │  ▲              ▲
//     │  └─Kill──┘    │  └─Kill──┘       │
//     │      Pause ▼  │ Resume           │
//     │        paused ┴──── Exit ────────┘
//     └──────────────── Exit / Delete ─────▶ stopped / deleted
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "shim/state.pb.h"

namespace shim {

enum class ProcessState { kCreated, kRunning, kPaused, kStopped, kDeleted };
enum class ProcessEvent { kStart, kKill, kPause, kResume, kExit, kDelete };

std::string_view Name(ProcessState s);
std::string_view Name(ProcessEvent e);

// The state after `event`, or the error to return for it.
absl::StatusOr<ProcessState> Transition(ProcessState from, ProcessEvent event);

// containerd.v1.types.Status: UNKNOWN 0, CREATED 1, RUNNING 2, STOPPED 3, PAUSED 4.
int ToContainerdStatus(ProcessState s);
embedshim::ProcessStatus ToRecord(ProcessState s);
ProcessState FromRecord(embedshim::ProcessStatus s);

}  // namespace shim
