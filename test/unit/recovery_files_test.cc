// Corrupt files a restarted server finds: state records and spooled events.
// Each is moved aside as <name>.corrupt-<time> with a log line, recovery
// goes on with the rest, and the next recovery does not meet it again.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "base/corrupt_file.h"
#include "base/event_loop.h"
#include "events_task.pb.h"
#include "events_ttrpc.pb.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "shim/store/state_store.h"
#include "shim/task/event_publisher.h"
#include "test/support/fs_util.h"

namespace {

using test_support::ScopedTempDir;

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

size_t CountCorrupt(const std::string& dir) {
  size_t n = 0;
  for (const std::string& name : Names(dir)) n += base::IsCorruptName(name);
  return n;
}

embedshim::ContainerRecord Record(const std::string& id) {
  embedshim::ContainerRecord r;
  r.set_namespace_("ns");
  r.set_id(id);
  r.set_bundle("/b/" + id);
  r.set_status(embedshim::RUNNING);
  r.set_pid(100);
  return r;
}

}  // namespace

TEST_CASE("state records: a corrupt one is moved aside, the rest recover", "[unit][recover]") {
  ScopedTempDir tmp("recover-records-");
  REQUIRE(tmp.status().ok());
  const std::string dir = tmp.Sub("state");
  shim::StateStore store(dir);
  REQUIRE(store.Save(Record("good")).ok());
  std::string good_bytes = Record("good").SerializeAsString();

  // Each of these is a record recovery must not take.
  auto put = [&](const std::string& id, const std::string& bytes) {
    REQUIRE(test_support::WriteFile(dir + "/ns/" + id + ".pb", bytes, 0600).ok());
  };
  put("garbage", "\xff\xff\xff\xff not protobuf");
  put("truncated", Record("truncated").SerializeAsString().substr(0, 5));
  put("other", good_bytes);  // names "good", stored as "other"
  embedshim::ContainerRecord r = Record("status");
  r.set_status(static_cast<embedshim::ProcessStatus>(99));
  put("status", r.SerializeAsString());
  r = Record("pid");
  r.set_pid(0xffffffff);  // -1 as a pid_t: kill(-1) signals everything
  put("pid", r.SerializeAsString());
  r = Record("twice");
  for (int i = 0; i < 2; ++i) {
    auto* e = r.add_execs();
    e->set_exec_id("e1");
    e->set_status(embedshim::RUNNING);
    e->set_pid(200);
  }
  put("twice", r.SerializeAsString());
  r = Record("dotdot");
  r.add_execs()->set_exec_id("../x");
  r.mutable_execs(0)->set_status(embedshim::CREATED);
  put("dotdot", r.SerializeAsString());
  put("empty", "");  // parses as an empty record: names nobody

  std::vector<std::string> errors;
  std::vector<embedshim::ContainerRecord> loaded = store.LoadAll(&errors);
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].id() == "good");
  CHECK(errors.size() == 8);
  INFO(fmt::format("{}", fmt::join(Names(dir + "/ns"), " ")));
  CHECK(CountCorrupt(dir + "/ns") == 8);
  CHECK(Names(dir + "/ns").front().starts_with("dotdot.pb.corrupt-"));

  // The next recovery meets only the good one.
  errors.clear();
  CHECK(store.LoadAll(&errors).size() == 1);
  CHECK(errors.empty());
}

TEST_CASE("state records: DecodeRecord names what is wrong", "[unit][recover]") {
  embedshim::ContainerRecord r = Record("c1");
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "ns", "c1").ok());
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "ns", "c2").status().message() ==
        "names ns/c1, not ns/c2");
  r.set_namespace_("../etc");
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "../etc", "c1").status().code() ==
        absl::StatusCode::kDataLoss);
  r = Record("c1");
  r.set_status(embedshim::PROCESS_STATUS_UNSPECIFIED);
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "ns", "c1").status().message() ==
        "unknown status 0");
  r = Record("c1");
  r.add_execs()->set_status(embedshim::RUNNING);
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "ns", "c1").status().message() ==
        "exec id \"\" is not usable");
  r = Record("c1");
  r.add_execs()->set_exec_id("e");
  r.mutable_execs(0)->set_status(embedshim::CREATING);
  CHECK(shim::DecodeRecord(r.SerializeAsString(), "ns", "c1").status().message() ==
        "exec \"e\" has unknown status 6");
}

namespace {

std::string SpooledExit(const std::string& ns, const std::string& topic,
                        const std::string& type) {
  containerd::events::TaskExit exit;
  exit.set_container_id("c1");
  exit.set_id("c1");
  containerd::services::events::ttrpc::v1::ForwardRequest req;
  req.mutable_envelope()->set_namespace_(ns);
  req.mutable_envelope()->set_topic(topic);
  req.mutable_envelope()->mutable_event()->set_type_url(type);
  req.mutable_envelope()->mutable_event()->set_value(exit.SerializeAsString());
  return req.SerializeAsString();
}

}  // namespace

TEST_CASE("event spool: a corrupt file is moved aside, the rest are resent", "[unit][recover]") {
  ScopedTempDir tmp("recover-spool-");
  REQUIRE(tmp.status().ok());
  const std::string spool = tmp.path();
  auto put = [&](const std::string& name, const std::string& bytes) {
    REQUIRE(test_support::WriteFile(spool + "/" + name, bytes, 0600).ok());
  };
  const std::string exit = SpooledExit("ns", "/tasks/exit", "containerd.events.TaskExit");
  put("00000000000000000001", exit);
  put("00000000000000000002", "\x0a\xff garbage");
  put("00000000000000000003", "");  // no envelope: containerd 1.6 would crash
  put("00000000000000000004", SpooledExit("ns", "/tasks/nope", "x"));
  put("00000000000000000005", SpooledExit("ns", "/tasks/exit", "containerd.events.TaskOOM"));
  put("00000000000000000006", SpooledExit("", "/tasks/exit", "containerd.events.TaskExit"));
  put("00000000000000000007", exit);
  // Not a name the spool writes: "1" would read 00..01 a second time.
  put("1", exit);
  put("000000000000000000009", exit);
  put("00000000000000000008.tmp", exit);  // never finished: removed, as before

  auto loop = base::EventLoop::Create();
  REQUIRE(loop.ok());
  {
    shim::EventPublisher publisher(**loop, "", spool);
    CHECK(publisher.queued() == 2);
    CHECK(publisher.Spooled("/tasks/exit", "ns", "c1", "c1"));
    INFO(fmt::format("{}", fmt::join(Names(spool), " ")));
    CHECK(CountCorrupt(spool) == 7);
    CHECK(!std::filesystem::exists(spool + "/00000000000000000008.tmp"));
    // A new event goes after every file seen.
    containerd::events::TaskExit e;
    e.set_container_id("c2");
    publisher.Publish("ns", "/tasks/exit", e);
    CHECK(std::filesystem::exists(spool + "/00000000000000000008"));
  }
  // The next server resends the three whole events and leaves the corrupt
  // ones where they are.
  shim::EventPublisher next(**loop, "", spool);
  CHECK(next.queued() == 3);
  CHECK(CountCorrupt(spool) == 7);
}

TEST_CASE("event spool: DecodeSpooledEvent reads what Publish wrote", "[unit][recover]") {
  absl::StatusOr<shim::SpooledEvent> e =
      shim::DecodeSpooledEvent(SpooledExit("ns", "/tasks/exit", "containerd.events.TaskExit"));
  REQUIRE(e.ok());
  CHECK(e->topic == "/tasks/exit");
  CHECK(e->ns == "ns");
  CHECK(e->container_id == "c1");
  CHECK(e->process_id == "c1");
  CHECK(shim::DecodeSpooledEvent("").status().message() == "no envelope");
}
