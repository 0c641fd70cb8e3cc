#include "shim/process/state.h"

#include "base/absl_fmt.h"
#include "fmt/format.h"

namespace shim::process {

std::string_view Name(Status s) {
  switch (s) {
    case Status::kCreating: return "creating";
    case Status::kCreated: return "created";
    case Status::kStarting: return "starting";
    case Status::kRunning: return "running";
    case Status::kPaused: return "paused";
    case Status::kStopped: return "stopped";
    case Status::kDeleted: return "deleted";
  }
  return "?";
}

std::string_view Name(Event e) {
  switch (e) {
    case Event::kCreated: return "create";
    case Event::kStart: return "start";
    case Event::kStarted: return "finish starting";
    case Event::kStartFailed: return "fail starting";
    case Event::kKill: return "kill";
    case Event::kPause: return "pause";
    case Event::kResume: return "resume";
    case Event::kExit: return "exit";
    case Event::kDelete: return "delete";
    case Event::kCheckpoint: return "checkpoint";
    case Event::kUpdate: return "update";
  }
  return "?";
}

namespace {

using S = Status;
using E = Event;

absl::Status Illegal(Kind kind, Status from, Event event) {
  return absl::FailedPreconditionError(fmt::format("cannot {} a {} {}process", Name(event),
                                                   Name(from),
                                                   kind == Kind::kInit ? "" : "exec "));
}

// The init's table; an exec's is a part of it (ExecTransition). `kind`
// only names the process in an error.
absl::StatusOr<Status> InitTransition(Kind kind, Status from, Event event) {
  switch (from) {
    case S::kCreating:
      if (event == E::kCreated) return S::kCreated;
      if (event == E::kDelete) return S::kDeleted;  // a failed create, undone
      return absl::FailedPreconditionError("container is still being created");
    case S::kCreated:
      switch (event) {
        case E::kStart: return S::kStarting;
        case E::kUpdate: return S::kCreated;
        case E::kKill: return S::kCreated;  // the exit comes later, as an event
        case E::kExit: return S::kStopped;
        case E::kDelete: return S::kDeleted;
        default: break;
      }
      break;
    case S::kStarting:
      switch (event) {
        case E::kStarted: return S::kRunning;
        case E::kStartFailed: return S::kCreated;
        case E::kExit: return S::kStarting;  // held until the start's outcome
        default: break;
      }
      break;
    case S::kRunning:
      switch (event) {
        case E::kKill: return S::kRunning;
        case E::kPause: return S::kPaused;
        case E::kCheckpoint: return S::kRunning;
        case E::kUpdate: return S::kRunning;
        case E::kExit: return S::kStopped;
        case E::kStart: return absl::FailedPreconditionError("process already started");
        case E::kDelete:
          return absl::FailedPreconditionError("cannot delete a running process: kill it first");
        default: break;
      }
      break;
    case S::kPaused:
      switch (event) {
        case E::kKill: return S::kPaused;
        case E::kResume: return S::kRunning;
        case E::kCheckpoint: return S::kPaused;
        case E::kUpdate: return S::kPaused;
        case E::kExit: return S::kStopped;
        case E::kDelete:
          return absl::FailedPreconditionError("cannot delete a paused process: kill it first");
        default: break;
      }
      break;
    case S::kStopped:
      switch (event) {
        case E::kDelete: return S::kDeleted;
        case E::kExit: return S::kStopped;  // a repeated report changes nothing
        // runc-v2's words; its cgroup may be gone already.
        case E::kUpdate: return absl::FailedPreconditionError("cannot update a stopped container");
        // containerd's kill-and-delete path reads NotFound as "already exited".
        case E::kKill: return absl::NotFoundError("process already finished");
        default: break;
      }
      break;
    case S::kDeleted:
      return absl::NotFoundError("process deleted");
  }
  return Illegal(kind, from, event);
}

// An exec is an init without a creating state and without a pause of its
// own (it shows its container's); a created exec has nothing to kill, and
// nothing of it can exit, until it starts.
absl::StatusOr<Status> ExecTransition(Status from, Event event) {
  if (from == S::kDeleted) return absl::NotFoundError("process deleted");
  if (from == S::kCreated && event == E::kKill)
    return absl::FailedPreconditionError("exec process not started");
  const bool init_only = from == S::kCreating || from == S::kPaused || event == E::kCreated ||
                         event == E::kPause || event == E::kResume || event == E::kCheckpoint ||
                         event == E::kUpdate ||
                         (from == S::kCreated && event == E::kExit);
  if (init_only) return Illegal(Kind::kExec, from, event);
  return InitTransition(Kind::kExec, from, event);
}

}  // namespace

absl::StatusOr<Status> Transition(Kind kind, Status from, Event event) {
  return kind == Kind::kInit ? InitTransition(kind, from, event) : ExecTransition(from, event);
}

int ToContainerdStatus(Status s) {
  switch (s) {
    case Status::kCreating: return 0;
    case Status::kCreated: return 1;
    case Status::kStarting: return 1;
    case Status::kRunning: return 2;
    case Status::kStopped: return 3;
    case Status::kPaused: return 4;
    case Status::kDeleted: return 0;
  }
  return 0;
}

embedshim::ProcessStatus ToRecord(Status s) {
  switch (s) {
    case Status::kCreating: return embedshim::CREATING;
    case Status::kCreated: return embedshim::CREATED;
    case Status::kStarting: return embedshim::CREATED;
    case Status::kRunning: return embedshim::RUNNING;
    case Status::kPaused: return embedshim::PAUSED;
    case Status::kStopped: return embedshim::STOPPED;
    case Status::kDeleted: return embedshim::DELETED;
  }
  return embedshim::PROCESS_STATUS_UNSPECIFIED;
}

Status FromRecord(embedshim::ProcessStatus s) {
  switch (s) {
    case embedshim::CREATING: return Status::kCreating;
    case embedshim::CREATED: return Status::kCreated;
    case embedshim::RUNNING: return Status::kRunning;
    case embedshim::PAUSED: return Status::kPaused;
    case embedshim::STOPPED: return Status::kStopped;
    default: return Status::kDeleted;
  }
}

}  // namespace shim::process
