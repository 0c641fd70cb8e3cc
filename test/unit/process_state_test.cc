// The process state machines (shim/process/state.h): every state x event,
// for the init and for an exec, against a table written out here.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "shim/process/state.h"

namespace {

using shim::process::Event;
using shim::process::Kind;
using shim::process::Status;
using shim::process::Transition;

constexpr Status kStatuses[] = {Status::kCreating, Status::kCreated, Status::kStarting,
                                Status::kRunning,  Status::kPaused,  Status::kStopped,
                                Status::kDeleted};
constexpr Event kEvents[] = {Event::kCreated, Event::kStart,  Event::kStarted,
                             Event::kStartFailed, Event::kKill, Event::kPause,
                             Event::kResume,  Event::kExit,   Event::kDelete,
                             Event::kCheckpoint, Event::kUpdate};

// What is legal; everything else is an error. NotFound where containerd
// reads it as "already gone".
using Table = std::map<std::pair<Status, Event>, Status>;

const Table kInitLegal = {
    {{Status::kCreating, Event::kCreated}, Status::kCreated},
    {{Status::kCreating, Event::kDelete}, Status::kDeleted},
    {{Status::kCreated, Event::kStart}, Status::kStarting},
    {{Status::kCreated, Event::kKill}, Status::kCreated},
    {{Status::kCreated, Event::kExit}, Status::kStopped},
    {{Status::kCreated, Event::kDelete}, Status::kDeleted},
    {{Status::kStarting, Event::kStarted}, Status::kRunning},
    {{Status::kStarting, Event::kStartFailed}, Status::kCreated},
    {{Status::kStarting, Event::kExit}, Status::kStarting},
    {{Status::kRunning, Event::kKill}, Status::kRunning},
    {{Status::kRunning, Event::kPause}, Status::kPaused},
    {{Status::kRunning, Event::kCheckpoint}, Status::kRunning},
    {{Status::kRunning, Event::kExit}, Status::kStopped},
    {{Status::kPaused, Event::kKill}, Status::kPaused},
    {{Status::kPaused, Event::kResume}, Status::kRunning},
    {{Status::kPaused, Event::kCheckpoint}, Status::kPaused},
    {{Status::kPaused, Event::kExit}, Status::kStopped},
    {{Status::kStopped, Event::kDelete}, Status::kDeleted},
    {{Status::kStopped, Event::kExit}, Status::kStopped},
    // Update changes resources, never the state.
    {{Status::kCreated, Event::kUpdate}, Status::kCreated},
    {{Status::kRunning, Event::kUpdate}, Status::kRunning},
    {{Status::kPaused, Event::kUpdate}, Status::kPaused},
};

const Table kExecLegal = {
    {{Status::kCreated, Event::kStart}, Status::kStarting},
    {{Status::kCreated, Event::kDelete}, Status::kDeleted},
    {{Status::kStarting, Event::kStarted}, Status::kRunning},
    {{Status::kStarting, Event::kStartFailed}, Status::kCreated},
    {{Status::kStarting, Event::kExit}, Status::kStarting},
    {{Status::kRunning, Event::kKill}, Status::kRunning},
    {{Status::kRunning, Event::kExit}, Status::kStopped},
    {{Status::kStopped, Event::kDelete}, Status::kDeleted},
    {{Status::kStopped, Event::kExit}, Status::kStopped},
};

void CheckTable(Kind kind, const Table& legal) {
  for (Status from : kStatuses) {
    for (Event event : kEvents) {
      auto next = Transition(kind, from, event);
      INFO(shim::process::Name(from) << " + " << shim::process::Name(event));
      auto it = legal.find({from, event});
      if (it != legal.end()) {
        REQUIRE(next.ok());
        CHECK(*next == it->second);
        continue;
      }
      REQUIRE_FALSE(next.ok());
      const bool gone = from == Status::kDeleted || (from == Status::kStopped && event == Event::kKill);
      if (gone) CHECK(absl::IsNotFound(next.status()));
      else CHECK(absl::IsFailedPrecondition(next.status()));
      CHECK_FALSE(next.status().message().empty());
    }
  }
}

}  // namespace

TEST_CASE("process state: every init transition, legal or the error containerd expects",
          "[unit][state]") {
  CheckTable(Kind::kInit, kInitLegal);
}

TEST_CASE("process state: every exec transition, legal or the error containerd expects",
          "[unit][state]") {
  CheckTable(Kind::kExec, kExecLegal);
}

TEST_CASE("process state: a stopped container cannot be updated, in runc-v2's words",
          "[unit][state][update]") {
  auto next = Transition(Kind::kInit, Status::kStopped, Event::kUpdate);
  REQUIRE(absl::IsFailedPrecondition(next.status()));
  CHECK(next.status().message() == "cannot update a stopped container");
}

TEST_CASE("process state: records keep creating and deleted", "[unit][state]") {
  using shim::process::FromRecord;
  using shim::process::ToRecord;
  for (Status s : {Status::kCreating, Status::kCreated, Status::kRunning, Status::kPaused,
                   Status::kStopped, Status::kDeleted})
    CHECK(FromRecord(ToRecord(s)) == s);
  // A start in flight is persisted as created: recovery looks at the process.
  CHECK(FromRecord(ToRecord(Status::kStarting)) == Status::kCreated);
  CHECK(shim::process::ToContainerdStatus(Status::kStarting) == 1);  // CREATED
}
