#include "shim/process_state.h"

#include "base/absl_fmt.h"
#include "fmt/format.h"

namespace shim {

std::string_view Name(ProcessState s) {
  switch (s) {
    case ProcessState::kCreated: return "created";
    case ProcessState::kRunning: return "running";
    case ProcessState::kPaused: return "paused";
    case ProcessState::kStopped: return "stopped";
    case ProcessState::kDeleted: return "deleted";
  }
  return "?";
}

std::string_view Name(ProcessEvent e) {
  switch (e) {
    case ProcessEvent::kStart: return "start";
    case ProcessEvent::kKill: return "kill";
    case ProcessEvent::kPause: return "pause";
    case ProcessEvent::kResume: return "resume";
    case ProcessEvent::kExit: return "exit";
    case ProcessEvent::kDelete: return "delete";
  }
  return "?";
}

absl::StatusOr<ProcessState> Transition(ProcessState from, ProcessEvent event) {
  using S = ProcessState;
  using E = ProcessEvent;
  auto illegal = [&] {
    return absl::FailedPreconditionError(
        fmt::format("cannot {} a {} process", Name(event), Name(from)));
  };
  switch (from) {
    case S::kCreated:
      switch (event) {
        case E::kStart: return S::kRunning;
        case E::kKill: return S::kCreated;  // the exit comes later, as an event
        case E::kExit: return S::kStopped;
        case E::kDelete: return S::kDeleted;
        default: return illegal();
      }
    case S::kRunning:
      switch (event) {
        case E::kKill: return S::kRunning;
        case E::kPause: return S::kPaused;
        case E::kExit: return S::kStopped;
        case E::kStart:
          return absl::FailedPreconditionError("process already started");
        case E::kDelete:
          return absl::FailedPreconditionError("cannot delete a running process: kill it first");
        default: return illegal();
      }
    case S::kPaused:
      switch (event) {
        case E::kKill: return S::kPaused;
        case E::kResume: return S::kRunning;
        case E::kExit: return S::kStopped;
        default: return illegal();
      }
    case S::kStopped:
      switch (event) {
        case E::kDelete: return S::kDeleted;
        case E::kExit: return S::kStopped;  // a repeated report changes nothing
        // containerd's kill-and-delete path reads NotFound as "already exited".
        case E::kKill: return absl::NotFoundError("process already finished");
        default: return illegal();
      }
    case S::kDeleted:
      return absl::NotFoundError("process deleted");
  }
  return illegal();
}

int ToContainerdStatus(ProcessState s) {
  switch (s) {
    case ProcessState::kCreated: return 1;
    case ProcessState::kRunning: return 2;
    case ProcessState::kStopped: return 3;
    case ProcessState::kPaused: return 4;
    case ProcessState::kDeleted: return 0;
  }
  return 0;
}

embedshim::ProcessStatus ToRecord(ProcessState s) {
  switch (s) {
    case ProcessState::kCreated: return embedshim::CREATED;
    case ProcessState::kRunning: return embedshim::RUNNING;
    case ProcessState::kPaused: return embedshim::PAUSED;
    case ProcessState::kStopped: return embedshim::STOPPED;
    case ProcessState::kDeleted: return embedshim::PROCESS_STATUS_UNSPECIFIED;
  }
  return embedshim::PROCESS_STATUS_UNSPECIFIED;
}

ProcessState FromRecord(embedshim::ProcessStatus s) {
  switch (s) {
    case embedshim::CREATED: return ProcessState::kCreated;
    case embedshim::RUNNING: return ProcessState::kRunning;
    case embedshim::PAUSED: return ProcessState::kPaused;
    case embedshim::STOPPED: return ProcessState::kStopped;
    default: return ProcessState::kDeleted;
  }
}

}  // namespace shim
