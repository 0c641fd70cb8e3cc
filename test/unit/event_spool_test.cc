// The event spool a restarted server resends: only whole events.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "events_task.pb.h"
#include "shim/task/event_publisher.h"

TEST_CASE("a restarted server resends only whole spooled events") {
  char dir[] = "/tmp/event-spool-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string spool = dir;
  auto loop = base::EventLoop::Create();
  REQUIRE(loop.ok());
  {
    // The first server spools one event (containerd is unreachable: "").
    shim::EventPublisher first(**loop, "", spool);
    containerd::events::TaskExit exit;
    exit.set_container_id("c1");
    first.Publish("ns", "/tasks/exit", exit);
    REQUIRE(first.queued() == 1);
  }
  // A dying server left a half-written "<seq>.tmp", and an empty file.
  std::ofstream(spool + "/00000000000000000002.tmp") << "";
  std::ofstream(spool + "/00000000000000000003") << "";

  shim::EventPublisher next(**loop, "", spool);
  CHECK(next.queued() == 1);  // only the whole event
  CHECK(next.Spooled("/tasks/exit", "ns", "c1"));
  CHECK(access((spool + "/00000000000000000002.tmp").c_str(), F_OK) != 0);
  std::string cmd = "rm -rf " + spool;
  CHECK(system(cmd.c_str()) == 0);
}

TEST_CASE("each topic's event type is containerd's message name for it") {
  // The names are spelled out in the publisher (no reflection in the
  // server); containerd resolves the event by exactly this name.
  CHECK(shim::EventTypeOf("/tasks/create") == containerd::events::TaskCreate::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/start") == containerd::events::TaskStart::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/exit") == containerd::events::TaskExit::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/delete") == containerd::events::TaskDelete::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/oom") == containerd::events::TaskOOM::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/paused") == containerd::events::TaskPaused::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/resumed") == containerd::events::TaskResumed::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/exec-added") ==
        containerd::events::TaskExecAdded::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/exec-started") ==
        containerd::events::TaskExecStarted::descriptor()->full_name());
  CHECK(shim::EventTypeOf("/tasks/nope").empty());
}
