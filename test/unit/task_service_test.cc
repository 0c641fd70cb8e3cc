// The Task service and the process layer without root: a real loop, worker
// pool, ttrpc server and state store; fake runc, exit monitor, events and
// keeper (shim/process/environment.h). Requests go in as relayed frames, so
// a test can mark them replayed as the keeper does after a server restart.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "keeper/channel.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "google/protobuf/empty.pb.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "shim.pb.h"
#include "shim/process/environment.h"
#include "shim/process/runtime_marker.h"
#include "shim/store/state_store.h"
#include "shim/task/event_publisher.h"
#include "shim/task/task_service.h"
#include "test/support/fs_util.h"
#include "test/unit/ttrpc_test_util.h"
#include "ttrpc.pb.h"
#include "ttrpc/server.h"
#include "ttrpc/wire.h"

namespace {

namespace task = containerd::task::v2;
using shim::process::Spawned;

constexpr char kPrivatePidSpec[] = R"({"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}})";
constexpr char kHostPidSpec[] =
    R"({"linux":{"namespaces":[{"type":"mount"},{"type":"pid","path":"/proc/1/ns/pid"}]}})";

// A gate a fake runtime call waits at until the test opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class FakeRuntime final : public shim::process::Runtime {
 public:
  std::mutex mu;
  std::vector<std::string> calls;
  absl::Status create_error, start_error, exec_error;
  std::shared_ptr<Gate> create_gate, start_gate, exec_gate, kill_gate;  // null: no wait
  absl::Status checkpoint_error, restore_error;
  pid_t next_pid = 1000;
  pid_t runtime_pid = 500;
  bool waits_in_init = true;
  embedshim::RuntimeOptions created_options;  // of the last Create

  absl::StatusOr<Spawned> Create(const embedshim::ContainerRecord& c, bool) override {
    {
      std::lock_guard lock(mu);
      created_options = c.options();
    }
    auto [gate, err] = Note("create " + c.id(), create_gate, create_error);
    if (gate) gate->Wait();
    if (!err.ok()) return err;
    Spawned s;
    std::lock_guard lock(mu);
    s.pid = next_pid++;
    s.start_boottime = 42;
    return s;
  }
  absl::Status Start(const embedshim::ContainerRecord& c, bool) override {
    auto [gate, err] = Note("start " + c.id(), start_gate, start_error);
    if (gate) gate->Wait();
    return err;
  }
  absl::StatusOr<Spawned> Exec(const embedshim::ContainerRecord& c,
                               const embedshim::ExecRecord& e,
                               const std::function<absl::Status(pid_t)>& on_spawned) override {
    auto [gate, err] = Note("exec " + c.id() + " " + e.exec_id() + " " + e.spec(), exec_gate,
                            exec_error);
    if (absl::Status st = on_spawned(runtime_pid); !st.ok()) return st;
    if (gate) gate->Wait();
    if (!err.ok()) return err;
    Spawned s;
    std::lock_guard lock(mu);
    s.pid = next_pid++;
    return s;
  }
  absl::Status Kill(const embedshim::ContainerRecord& c, int sig, bool all) override {
    auto [gate, err] = Note(fmt::format("kill {} {} {}", c.id(), sig, all), kill_gate, {});
    if (gate) gate->Wait();
    return absl::OkStatus();
  }
  absl::Status Checkpoint(const embedshim::ContainerRecord& c,
                          const shim::process::CheckpointSpec& spec) override {
    auto [gate, err] = Note(fmt::format("checkpoint {} {} exit={} work={} tcp={} cgroups={}",
                                        c.id(), spec.image_path, spec.exit, spec.work_path,
                                        spec.open_tcp, spec.cgroups_mode),
                            nullptr, checkpoint_error);
    return err;
  }
  absl::StatusOr<Spawned> Restore(const embedshim::ContainerRecord& c,
                                  const std::function<absl::Status(pid_t)>& on_spawned) override {
    auto [gate, err] = Note(fmt::format("restore {} {} parent={}", c.id(), c.restore_checkpoint(),
                                        c.restore_parent_checkpoint()),
                            nullptr, restore_error);
    if (absl::Status st = on_spawned(runtime_pid); !st.ok()) return st;
    if (!err.ok()) return err;
    Spawned s;
    std::lock_guard lock(mu);
    s.pid = next_pid++;
    s.start_boottime = 43;
    return s;
  }
  absl::Status Delete(const embedshim::ContainerRecord& c, bool force) override {
    Note(fmt::format("delete {} {}", c.id(), force), nullptr, {});
    return absl::OkStatus();
  }
  absl::Status Pause(const embedshim::ContainerRecord& c) override {
    Note("pause " + c.id(), nullptr, {});
    return absl::OkStatus();
  }
  absl::Status Resume(const embedshim::ContainerRecord& c) override {
    Note("resume " + c.id(), nullptr, {});
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<pid_t>> Ps(const embedshim::ContainerRecord&) override {
    return std::vector<pid_t>{};
  }
  bool WaitsInInit(pid_t) override { return waits_in_init; }
  absl::Status Update(const embedshim::ContainerRecord& c, const std::string& resources) override {
    return Note("update " + c.id() + " " + resources, nullptr, update_error).second;
  }
  absl::Status update_error;

  std::vector<std::string> Calls() {
    std::lock_guard lock(mu);
    return calls;
  }

 private:
  std::pair<std::shared_ptr<Gate>, absl::Status> Note(std::string call,
                                                      const std::shared_ptr<Gate>& gate,
                                                      const absl::Status& err) {
    std::lock_guard lock(mu);
    calls.push_back(std::move(call));
    return {gate, err};
  }
};

class FakeExits final : public shim::process::ExitTracker {
 public:
  std::mutex mu;
  std::vector<std::string> calls;
  absl::Status Track(pid_t pid, uint64_t) override { return Note("track", pid); }
  absl::Status TrackSpawner(pid_t pid) override { return Note("spawner", pid); }
  absl::Status Untrack(pid_t pid) override { return Note("untrack", pid); }
  absl::Status Forget(pid_t pid) override { return Note("forget", pid); }
  std::vector<std::string> Calls() {
    std::lock_guard lock(mu);
    return calls;
  }

 private:
  absl::Status Note(const char* what, pid_t pid) {
    std::lock_guard lock(mu);
    calls.push_back(fmt::format("{} {}", what, pid));
    return absl::OkStatus();
  }
};

// Events as containerd would see them: "topic id" (TaskExit's id, an exec
// event's exec id), in order. Loop thread only.
class FakeEvents final : public shim::process::EventSink {
 public:
  std::vector<std::string> published;
  void Publish(const std::string&, const std::string& topic,
               const google::protobuf::MessageLite& event) override {
    // The real publisher sends only topics it has a message type for.
    CHECK_FALSE(shim::EventTypeOf(topic).empty());
    containerd::events::TaskExit probe;  // container_id 1, id / exec_id 2
    probe.ParseFromString(event.SerializeAsString());
    const bool names_process = topic == "/tasks/exit" || topic.rfind("/tasks/exec-", 0) == 0;
    published.push_back(names_process ? topic + " " + probe.id() : topic);
  }
  bool Spooled(const std::string& topic, const std::string&, const std::string&,
               const std::string&) const override {
    // Else containerd took every event at once.
    return std::find(spooled.begin(), spooled.end(), topic) != spooled.end();
  }
  std::vector<std::string> spooled;  // topics that wait in the spool
};

// The cgroups' OOM-kill counters, as the test sets them. Loop thread only.
class FakeOom final : public shim::process::OomWatch {
 public:
  std::map<std::string, uint64_t> counts;  // by container id; none: no cgroup
  std::vector<std::string> calls;
  absl::Status Watch(const embedshim::ContainerRecord& c) override {
    calls.push_back("watch " + c.id());
    if (!counts.contains(c.id())) return absl::NotFoundError("no cgroup");
    watched.insert(c.id());
    return absl::OkStatus();
  }
  void Unwatch(const std::string&, const std::string& id) override {
    if (watched.erase(id)) calls.push_back("unwatch " + id);
  }
  std::optional<uint64_t> OomKills(const std::string&, const std::string& id) override {
    if (!watched.contains(id)) return std::nullopt;
    return counts.at(id);
  }
  std::set<std::string> watched;
};

class FakeKeeper final : public shim::process::FdKeeper {
 public:
  std::vector<std::string> calls;
  void Keep(const std::string& name, base::UniqueFd) override { calls.push_back("keep " + name); }
  void Drop(const std::string& name) override { calls.push_back("drop " + name); }
  void RelayTty(const std::string& name, shim::process::TerminalFds) override {
    calls.push_back("relay " + name);
  }
  void ResizeTty(const std::string& name, uint32_t w, uint32_t h) override {
    calls.push_back(fmt::format("resize {} {}x{}", name, w, h));
  }
  void CloseTtyInput(const std::string& name) override { calls.push_back("eof " + name); }
  void DropTty(const std::string& name) override { calls.push_back("droptty " + name); }
};

class Harness {
 public:
  Harness()
      : tmp_("task-service-test-"),
        dir_(tmp_.path()),
        pool_(thread_.loop(), 2),
        store_(dir_ + "/state"),
        env_{thread_.loop(), pool_, runtime, exits, events, keeper, store_, oom} {
    thread_.Sync([&] { Serve(); });
  }
  // A new server: the service recovers from the records, and is told the
  // exits that came while none ran.
  void Restart(std::vector<bpf::ExitRecord> exits_meanwhile = {}) {
    thread_.Sync([&] {
      server_.reset();
      service_.reset();
      Serve(std::move(exits_meanwhile), /*recover=*/true);
    });
  }
  std::string StateDir() const { return dir_ + "/state"; }
  void OomKills(const std::string& id, uint64_t count) {
    thread_.Sync([&] {
      oom.counts[id] = count;
      service_->OnOomKills("ns", id, count);
    });
  }
  void SetOomCount(const std::string& id, uint64_t count) {
    thread_.Sync([&] { oom.counts[id] = count; });
  }
  std::vector<std::string> OomCalls() {
    return thread_.Sync([&] { return oom.calls; });
  }
  ~Harness() {
    thread_.Sync([&] {
      server_.reset();
      service_.reset();
    });
  }

  // Sends a request; Await(stream) gets its answer.
  uint32_t Send(const std::string& method, const google::protobuf::Message& req,
                bool replayed = false) {
    uint32_t stream = next_stream_ += 2;
    std::string bytes = ttrpc::EncodeRequestFrame(stream, "containerd.task.v2.Task", method,
                                                  req.SerializeAsString(), {}, absl::ZeroDuration());
    auto frame = ttrpc::FrameFromBytes(std::move(bytes));
    REQUIRE(frame.has_value());
    thread_.Sync([&] {
      server_->OnRelayedFrame(1, std::move(*frame), replayed ? keeper::kFrameReplayed : 0);
    });
    return stream;
  }
  // The status and payload of stream's answer; fails the test after 10 s.
  absl::StatusOr<std::string> Await(uint32_t stream) {
    std::unique_lock lock(mu_);
    for (;;) {
      for (auto it = replies_.begin(); it != replies_.end(); ++it) {
        ttrpc::FrameDecoder decoder(UINT32_MAX);
        decoder.Feed(*it);
        auto frame = decoder.Next();
        if (!frame || frame->header.stream_id != stream) continue;
        replies_.erase(it);
        ttrpc::Response resp;
        REQUIRE(resp.ParseFromArray(frame->payload().data(), static_cast<int>(frame->payload().size())));
        absl::Status st = ttrpc::StatusOf(resp);
        if (!st.ok()) return st;
        return resp.payload();
      }
      REQUIRE(cv_.wait_for(lock, std::chrono::seconds(10)) != std::cv_status::timeout);
    }
  }
  bool Answered(uint32_t stream) {
    std::lock_guard lock(mu_);
    for (const auto& r : replies_) {
      ttrpc::FrameDecoder decoder(UINT32_MAX);
      decoder.Feed(r);
      auto frame = decoder.Next();
      if (frame && frame->header.stream_id == stream) return true;
    }
    return false;
  }
  template <class Resp>
  absl::StatusOr<Resp> Call(const std::string& method, const google::protobuf::Message& req,
                            bool replayed = false) {
    auto raw = Await(Send(method, req, replayed));
    if (!raw.ok()) return raw.status();
    Resp resp;
    REQUIRE(resp.ParseFromString(*raw));
    return resp;
  }

  // Makes the monitor report pid's exit with `code`.
  void Exit(pid_t pid, int code) {
    thread_.Sync([&] {
      bpf::ExitRecord e;
      e.pid = pid;
      e.wait_status = code << 8;
      e.exited_at_ns = 1'700'000'000'000'000'000;
      service_->OnExit(e);
    });
  }
  // Writes a record as a dead server left it.
  void SaveRecord(const embedshim::ContainerRecord& r) {
    REQUIRE(thread_.Sync([&] { return store_.Save(r); }).ok());
  }
  void DropUnknownTtys(absl::flat_hash_set<std::string> held) {
    thread_.Sync([&] { service_->DropUnknownTtys(held); });
  }
  std::vector<std::string> Events() {
    return thread_.Sync([&] { return events.published; });
  }
  std::vector<std::string> KeeperCalls() {
    return thread_.Sync([&] { return keeper.calls; });
  }
  // Waits until `done()` (called on the test's thread) holds, for worker
  // results that reach the loop by themselves.
  template <class F>
  void Until(F done) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return;
      std::this_thread::yield();
      usleep(1000);
    }
    FAIL("condition never became true");
  }

  // A bundle with a config.json, and Create of container `id` in it. By
  // default the spec has a pid namespace of its own (as usual), so the init's
  // exit kills nothing else first.
  task::CreateTaskRequest CreateRequest(const std::string& id, bool terminal = false,
                                        bool host_pid = false) {
    std::string bundle = dir_ + "/" + id;
    REQUIRE(test_support::MakeDirs(bundle).ok());
    REQUIRE(test_support::WriteFile(bundle + "/config.json",
                                    host_pid ? kHostPidSpec : kPrivatePidSpec)
                .ok());
    task::CreateTaskRequest req;
    req.set_id(id);
    req.set_bundle(bundle);
    req.set_terminal(terminal);
    return req;
  }
  pid_t CreateAndStart(const std::string& id) {
    auto created = Call<task::CreateTaskResponse>("Create", CreateRequest(id));
    REQUIRE(created.ok());
    task::StartRequest start;
    start.set_id(id);
    auto started = Call<task::StartResponse>("Start", start);
    REQUIRE(started.ok());
    return static_cast<pid_t>(started->pid());
  }
  task::StateResponse State(const std::string& id, const std::string& exec_id = "") {
    task::StateRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    auto resp = Call<task::StateResponse>("State", req);
    REQUIRE(resp.ok());
    return *resp;
  }

  FakeRuntime runtime;
  FakeExits exits;
  FakeEvents events;
  FakeKeeper keeper;
  FakeOom oom;

 private:
  void Serve(std::vector<bpf::ExitRecord> replay = {}, bool recover = false) {
    service_ = std::make_unique<shim::TaskService>(env_, [replay] { return replay; });
    if (recover) service_->Recover();
    server_ = std::make_unique<ttrpc::Server>(thread_.loop(), ttrpc::ServerOptions{});
    service_->RegisterOn(*server_);
    ttrpc::Server::Relay relay;
    relay.send = [this](std::string frame) {
      std::lock_guard lock(mu_);
      replies_.push_back(std::move(frame));
      cv_.notify_all();
    };
    relay.close = [] {};
    REQUIRE(server_->AddRelayedConnection(1, "ns", ucred{0, 0, 0}, relay).ok());
  }

  test::LoopThread thread_;
  test_support::ScopedTempDir tmp_;
  std::string dir_;
  base::WorkerPool pool_;
  shim::StateStore store_;
  shim::process::Environment env_;
  std::unique_ptr<shim::TaskService> service_;
  std::unique_ptr<ttrpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> replies_;
  uint32_t next_stream_ = 1;
};

task::ExecProcessRequest ExecRequest(const std::string& id, const std::string& exec_id,
                                     bool terminal = false) {
  task::ExecProcessRequest req;
  req.set_id(id);
  req.set_exec_id(exec_id);
  req.set_terminal(terminal);
  req.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
  req.mutable_spec()->set_value(R"({"args":["true"]})");
  return req;
}

// A live child process that blocks until Finish() (or the destructor):
// stands in for an orphaned runc, or for a process it started.
class BlockedChild {
 public:
  BlockedChild() {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only the read end: another child's release end must not keep it.
      if (dup2(fds[0], 0) < 0) _exit(1);
      syscall(SYS_close_range, 3U, ~0U, 0U);
      char c;
      while (read(0, &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    close(fds[0]);
    release_.Reset(fds[1]);
  }
  ~BlockedChild() { Finish(); }
  pid_t pid() const { return pid_; }
  void Finish() {
    if (!release_) return;
    release_.Reset();
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }

 private:
  pid_t pid_ = -1;
  base::UniqueFd release_;
};

task::StartRequest StartRequest(const std::string& id, const std::string& exec_id = "") {
  task::StartRequest req;
  req.set_id(id);
  req.set_exec_id(exec_id);
  return req;
}

}  // namespace

TEST_CASE("task service: create, start, exit, delete in containerd's order", "[unit][task]") {
  Harness h;
  pid_t pid = h.CreateAndStart("c1");
  CHECK(pid == 1000);
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
  h.Exit(pid, 3);
  auto st = h.State("c1");
  CHECK(st.status() == containerd::v1::types::STOPPED);
  CHECK(st.exit_status() == 3);
  task::DeleteRequest del;
  del.set_id("c1");
  auto deleted = h.Call<task::DeleteResponse>("Delete", del);
  REQUIRE(deleted.ok());
  CHECK(deleted->exit_status() == 3);
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start",
                                               "/tasks/exit c1", "/tasks/delete"});
  CHECK(h.runtime.Calls() ==
        std::vector<std::string>{"create c1", "start c1", "delete c1 false"});
}

TEST_CASE("task service: a failed Create answers the calls queued behind it", "[unit][task]") {
  Harness h;
  h.runtime.create_gate = std::make_shared<Gate>();
  h.runtime.create_error = absl::UnknownError("runc create: no such image");
  uint32_t create = h.Send("Create", h.CreateRequest("c1"));
  uint32_t start = h.Send("Start", StartRequest("c1"));
  task::KillRequest kill;
  kill.set_id("c1");
  kill.set_signal(9);
  uint32_t killed = h.Send("Kill", kill);
  CHECK_FALSE(h.Answered(start));  // queued behind the create
  h.runtime.create_gate->Open();
  auto c = h.Await(create);
  CHECK(c.status().message() == "runc create: no such image");
  CHECK(absl::IsNotFound(h.Await(start).status()));
  auto k = h.Await(killed);
  INFO(k.status());
  CHECK(absl::IsNotFound(k.status()));
  CHECK(h.runtime.Calls() == std::vector<std::string>{"create c1"});
}

TEST_CASE("task service: an exit during start goes out after TaskStart", "[unit][task]") {
  Harness h;
  REQUIRE(h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1")).ok());
  h.runtime.start_gate = std::make_shared<Gate>();
  uint32_t start = h.Send("Start", StartRequest("c1"));
  h.Until([&] { return h.runtime.Calls().size() == 2; });  // runc start runs
  h.Exit(1000, 0);
  CHECK(h.State("c1").status() == containerd::v1::types::CREATED);  // held
  h.runtime.start_gate->Open();
  REQUIRE(h.Await(start).ok());
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit c1"});
  CHECK(h.State("c1").status() == containerd::v1::types::STOPPED);
}

TEST_CASE("task service: a replayed Start of a started init runs nothing again",
          "[unit][task][replay]") {
  Harness h;
  pid_t pid = h.CreateAndStart("c1");
  auto again = h.Call<task::StartResponse>("Start", StartRequest("c1"), /*replayed=*/true);
  REQUIRE(again.ok());
  CHECK(static_cast<pid_t>(again->pid()) == pid);
  auto plain = h.Call<task::StartResponse>("Start", StartRequest("c1"));
  CHECK(absl::IsFailedPrecondition(plain.status()));
  CHECK(h.runtime.Calls() == std::vector<std::string>{"create c1", "start c1"});
}

TEST_CASE("task service: exec, tracked from birth, exit before its start returns",
          "[unit][task][exec]") {
  Harness h;
  h.CreateAndStart("c1");
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  h.runtime.exec_gate = std::make_shared<Gate>();
  uint32_t start = h.Send("Start", StartRequest("c1", "e1"));
  // runc is tracked as a spawner before it can fork.
  h.Until([&] {
    auto calls = h.exits.Calls();
    return std::find(calls.begin(), calls.end(), "spawner 500") != calls.end();
  });
  h.Exit(1001, 5);   // the exec'd process, not known yet: held
  h.Exit(4242, 0);   // one of runc's own: forgotten once the start ends
  h.runtime.exec_gate->Open();
  auto started = h.Await(start);
  REQUIRE(started.ok());
  task::StartResponse resp;
  REQUIRE(resp.ParseFromString(*started));
  CHECK(resp.pid() == 1001);
  h.Until([&] { return h.State("c1", "e1").status() == containerd::v1::types::STOPPED; });
  auto st = h.State("c1", "e1");
  CHECK(st.exit_status() == 5);
  CHECK(st.id() == "e1");
  CHECK(st.exec_id() == "e1");
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start",
                                               "/tasks/exec-added e1", "/tasks/exec-started e1",
                                               "/tasks/exit e1"});
  auto calls = h.exits.Calls();
  CHECK(std::find(calls.begin(), calls.end(), "forget 4242") != calls.end());
  CHECK(std::find(calls.begin(), calls.end(), "forget 1001") != calls.end());
  CHECK(h.runtime.Calls().back() == R"(exec c1 e1 {"args":["true"]})");

  task::WaitRequest wait;
  wait.set_id("c1");
  wait.set_exec_id("e1");
  auto waited = h.Call<task::WaitResponse>("Wait", wait);
  REQUIRE(waited.ok());
  CHECK(waited->exit_status() == 5);

  task::DeleteRequest del;
  del.set_id("c1");
  del.set_exec_id("e1");
  auto deleted = h.Call<task::DeleteResponse>("Delete", del);
  REQUIRE(deleted.ok());
  CHECK(deleted->exit_status() == 5);
  CHECK(deleted->pid() == 1001);
  CHECK(absl::IsNotFound(h.Call<task::StateResponse>("State", [] {
                           task::StateRequest r;
                           r.set_id("c1");
                           r.set_exec_id("e1");
                           return r;
                         }()).status()));
  // A Delete replayed after a server restart gets the same answer; a second
  // plain one finds nothing.
  auto replayed = h.Call<task::DeleteResponse>("Delete", del, /*replayed=*/true);
  REQUIRE(replayed.ok());
  CHECK(replayed->exit_status() == 5);
  CHECK(absl::IsNotFound(h.Call<task::DeleteResponse>("Delete", del).status()));
  // The id is free again.
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  CHECK(h.State("c1", "e1").status() == containerd::v1::types::CREATED);
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);  // the container goes on
}

// A live process standing for a dead server's `runc exec` that outlives the
// process it started: it ends when End() (or the destructor) closes its pipe.
class LingeringRuntime {
 public:
  LingeringRuntime() {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      close(fds[1]);
      char c;
      while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    close(fds[0]);
    pipe_.Reset(fds[1]);
  }
  ~LingeringRuntime() { End(); }
  pid_t pid() const { return pid_; }
  void End() {
    if (pid_ <= 0) return;
    pipe_.Reset();
    (void)waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
  base::UniqueFd pipe_;
};

TEST_CASE("task service: a dead server's `runc exec` still running at recovery: the process it "
          "started is adopted with its exit, replayed Start or not",
          "[unit][task][exec][replay]") {
  Harness h;
  h.CreateAndStart("c1");
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  const std::string bundle = h.State("c1").bundle();
  // What the dead server's start left: the marker naming its live `runc
  // exec`, and the pid file runc wrote before the exec'd process (1001) exited.
  LingeringRuntime orphan;
  auto start = bpf::ReadStartBoottime(orphan.pid());
  REQUIRE(start.ok());
  REQUIRE(test_support::WriteFile(bundle + "/e1.runtime-pid",
                                  fmt::format("{} {}\n", orphan.pid(), *start))
              .ok());
  REQUIRE(test_support::WriteFile(bundle + "/e1.pid", "1001").ok());
  bpf::ExitRecord exit;
  exit.pid = 1001;
  exit.wait_status = 5 << 8;
  exit.exited_at_ns = 1'700'000'000'000'000'000;
  SECTION("the exit came while no server ran: replayed at recovery") { h.Restart({exit}); }
  SECTION("the exit comes after recovery, before the orphan ends") {
    h.Restart();
    h.Exit(1001, 5);
  }
  orphan.End();
  h.Until([&] { return h.State("c1", "e1").status() == containerd::v1::types::STOPPED; });
  CHECK(h.State("c1", "e1").exit_status() == 5);
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start",
                                               "/tasks/exec-added e1", "/tasks/exec-started e1",
                                               "/tasks/exit e1"});
  // The replayed Start, when it comes, gets the adopted pid; nothing ran runc.
  auto again = h.Call<task::StartResponse>("Start", StartRequest("c1", "e1"), /*replayed=*/true);
  REQUIRE(again.ok());
  CHECK(again->pid() == 1001);
  for (const std::string& call : h.runtime.Calls()) CHECK(call.rfind("exec ", 0) != 0);
}

TEST_CASE("task service: exec errors as runc-v2 gives them", "[unit][task][exec]") {
  Harness h;
  pid_t init = h.CreateAndStart("c1");
  auto added = h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1"));
  INFO(added.status());
  REQUIRE(added.ok());
  SECTION("a duplicate exec id") {
    auto dup = h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1"));
    CHECK(absl::IsAlreadyExists(dup.status()));
    // ... unless the request is a replay of the first.
    CHECK(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1"), true).ok());
  }
  SECTION("an unknown exec id") {
    CHECK(absl::IsNotFound(h.Call<task::StartResponse>("Start", StartRequest("c1", "nope")).status()));
  }
  SECTION("the runtime's error, the container unharmed") {
    h.runtime.exec_error = absl::UnknownError("runc exec: exec: \"nope\": not found");
    auto started = h.Call<task::StartResponse>("Start", StartRequest("c1", "e1"));
    CHECK(started.status().message() == "runc exec: exec: \"nope\": not found");
    CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
    CHECK(h.State("c1", "e1").status() == containerd::v1::types::CREATED);
  }
  SECTION("an exec in a stopped container") {
    h.Exit(init, 0);
    auto added = h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e2"));
    CHECK(absl::IsFailedPrecondition(added.status()));
    auto started = h.Call<task::StartResponse>("Start", StartRequest("c1", "e1"));
    CHECK(absl::IsFailedPrecondition(started.status()));
  }
  SECTION("kill of an exec not started, and of one that has exited") {
    task::KillRequest kill;
    kill.set_id("c1");
    kill.set_exec_id("e1");
    kill.set_signal(9);
    CHECK(absl::IsFailedPrecondition(h.Call<google::protobuf::Empty>("Kill", kill).status()));
    REQUIRE(h.Call<task::StartResponse>("Start", StartRequest("c1", "e1")).ok());
    h.Exit(1001, 0);
    CHECK(absl::IsNotFound(h.Call<google::protobuf::Empty>("Kill", kill).status()));
  }
}

TEST_CASE("task service: the init's TaskExit waits for its execs", "[unit][task][exec]") {
  Harness h;
  pid_t init = h.CreateAndStart("c1");
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  auto started = h.Call<task::StartResponse>("Start", StartRequest("c1", "e1"));
  REQUIRE(started.ok());
  h.Exit(init, 0);
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);  // held
  h.Exit(static_cast<pid_t>(started->pid()), 137);
  CHECK(h.State("c1").status() == containerd::v1::types::STOPPED);
  auto events = h.Events();
  REQUIRE(events.size() >= 2);
  CHECK(events[events.size() - 2] == "/tasks/exit e1");
  CHECK(events.back() == "/tasks/exit c1");
}

TEST_CASE("task service: tty stdio goes to the keeper; resize and close by name",
          "[unit][task][tty]") {
  Harness h;
  REQUIRE(h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1", /*terminal=*/true)).ok());
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1", /*terminal=*/true)).ok());
  task::ResizePtyRequest resize;
  resize.set_id("c1");
  resize.set_exec_id("e1");
  resize.set_width(100);
  resize.set_height(30);
  REQUIRE(h.Call<google::protobuf::Empty>("ResizePty", resize).ok());
  task::CloseIORequest close;
  close.set_id("c1");
  close.set_stdin(true);
  REQUIRE(h.Call<google::protobuf::Empty>("CloseIO", close).ok());
  resize.set_width(1 << 20);
  CHECK(absl::IsInvalidArgument(h.Call<google::protobuf::Empty>("ResizePty", resize).status()));
  CHECK(h.KeeperCalls() == std::vector<std::string>{"resize tty/ns/c1/e1 100x30", "eof tty/ns/c1"});
  CHECK(h.State("c1").terminal());
}

TEST_CASE("task service: a new server drops the keeper's relays of unknown processes",
          "[unit][task][tty]") {
  Harness h;
  REQUIRE(h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1", /*terminal=*/true)).ok());
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1", /*terminal=*/true)).ok());
  h.DropUnknownTtys({"tty/ns/c1", "tty/ns/c1/e1", "tty/ns/c1/gone", "tty/ns/deleted"});
  auto calls = h.KeeperCalls();
  std::sort(calls.begin(), calls.end());  // a hash set's order
  CHECK(calls == std::vector<std::string>{"droptty tty/ns/c1/gone", "droptty tty/ns/deleted"});
}

TEST_CASE("task service: replayed Create and Kill get the first answer", "[unit][task][replay]") {
  Harness h;
  pid_t pid = h.CreateAndStart("c1");
  auto again = h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1"), /*replayed=*/true);
  REQUIRE(again.ok());
  CHECK(static_cast<pid_t>(again->pid()) == pid);
  h.Exit(pid, 137);
  task::KillRequest kill;
  kill.set_id("c1");
  kill.set_signal(9);
  // The first Kill worked (the process is gone); its replay says so too.
  CHECK(h.Call<google::protobuf::Empty>("Kill", kill, /*replayed=*/true).ok());
  CHECK(absl::IsNotFound(h.Call<google::protobuf::Empty>("Kill", kill).status()));
  CHECK(h.runtime.Calls() == std::vector<std::string>{"create c1", "start c1"});
}

TEST_CASE("task service: an init sharing the host's pid namespace takes its cgroup with it",
          "[unit][task][kill-all]") {
  Harness h;
  auto created = h.Call<task::CreateTaskResponse>(
      "Create", h.CreateRequest("c1", /*terminal=*/false, /*host_pid=*/true));
  REQUIRE(created.ok());
  task::StartRequest start;
  start.set_id("c1");
  auto started = h.Call<task::StartResponse>("Start", start);
  REQUIRE(started.ok());
  const pid_t pid = static_cast<pid_t>(started->pid());
  task::WaitRequest wait;
  wait.set_id("c1");
  uint32_t waiting = h.Send("Wait", wait);
  h.runtime.kill_gate = std::make_shared<Gate>();
  h.Exit(pid, 0);
  // `runc kill --all` runs first; until it returns, nothing is published.
  h.Until([&] { return h.runtime.Calls().back() == "kill c1 9 true"; });
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start"});
  CHECK_FALSE(h.Answered(waiting));
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
  h.runtime.kill_gate->Open();
  REQUIRE(h.Await(waiting).ok());
  CHECK(h.Events() ==
        std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit c1"});
  CHECK(h.State("c1").status() == containerd::v1::types::STOPPED);
  // A second report of the same exit (a replay) kills nothing again.
  h.Exit(pid, 0);
  CHECK(h.runtime.Calls() ==
        std::vector<std::string>{"create c1", "start c1", "kill c1 9 true"});
}

TEST_CASE("task service: an init with a pid namespace of its own kills nothing on exit",
          "[unit][task][kill-all]") {
  Harness h;
  pid_t pid = h.CreateAndStart("c1");
  h.Exit(pid, 0);
  CHECK(h.State("c1").status() == containerd::v1::types::STOPPED);
  CHECK(h.runtime.Calls() == std::vector<std::string>{"create c1", "start c1"});
}

TEST_CASE("task service: checkpoint of a running or paused init only, options decoded",
          "[unit][task][checkpoint]") {
  Harness h;
  REQUIRE(h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1")).ok());
  task::CheckpointTaskRequest req;
  req.set_id("c1");
  req.set_path("/ckpt/by-containerd");
  auto created_state = h.Call<google::protobuf::Empty>("Checkpoint", req);
  CHECK(absl::IsFailedPrecondition(created_state.status()));
  task::StartRequest start;
  start.set_id("c1");
  auto started = h.Call<task::StartResponse>("Start", start);
  REQUIRE(started.ok());

  // No options: runc-v2's defaults (leave it running), into the request's path.
  REQUIRE(h.Call<google::protobuf::Empty>("Checkpoint", req).ok());
  // containerd.runc.v1.CheckpointOptions: its image path wins.
  containerd::runc::v1::CheckpointOptions o;
  o.set_exit(true);
  o.set_open_tcp(true);
  o.set_image_path("/ckpt/mine");
  o.set_work_path("/ckpt/work");
  o.set_cgroups_mode("soft");
  req.mutable_options()->set_type_url("containerd.runc.v1.CheckpointOptions");
  req.mutable_options()->set_value(o.SerializeAsString());
  REQUIRE(h.Call<google::protobuf::Empty>("Checkpoint", req).ok());
  // CRIU's failure is the answer; the container goes on.
  h.runtime.checkpoint_error = absl::FailedPreconditionError("criu failed: criu: vdso: nope");
  auto failed = h.Call<google::protobuf::Empty>("Checkpoint", req);
  CHECK(failed.status() == h.runtime.checkpoint_error);
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
  // Options of another type are refused before anything runs.
  req.mutable_options()->set_type_url("containerd.runc.v1.Options");
  CHECK(absl::IsInvalidArgument(h.Call<google::protobuf::Empty>("Checkpoint", req).status()));

  auto calls = h.runtime.Calls();
  REQUIRE(calls.size() == 5);
  CHECK(calls[2] == "checkpoint c1 /ckpt/by-containerd exit=false work= tcp=false cgroups=");
  CHECK(calls[3] == "checkpoint c1 /ckpt/mine exit=true work=/ckpt/work tcp=true cgroups=soft");
  // Of an exec: there is no such thing.
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  h.Exit(static_cast<pid_t>(started->pid()), 0);
  req.clear_options();
  CHECK(absl::IsFailedPrecondition(h.Call<google::protobuf::Empty>("Checkpoint", req).status()));
}

TEST_CASE("task service: a Create with a checkpoint restores at Start, tracked from birth",
          "[unit][task][checkpoint]") {
  Harness h;
  task::CreateTaskRequest create = h.CreateRequest("c1");
  create.set_checkpoint("/ckpt/images");
  create.set_parent_checkpoint("/ckpt/parent");
  auto created = h.Call<task::CreateTaskResponse>("Create", create);
  REQUIRE(created.ok());
  CHECK(created->pid() == 0);  // as runc-v2: nothing runs until Start
  CHECK(h.State("c1").status() == containerd::v1::types::CREATED);
  CHECK(h.runtime.Calls().empty());

  // A failed restore leaves it created.
  h.runtime.restore_error = absl::FailedPreconditionError("runc restore: criu failed");
  task::StartRequest start;
  start.set_id("c1");
  CHECK(h.Call<task::StartResponse>("Start", start).status() == h.runtime.restore_error);
  CHECK(h.State("c1").status() == containerd::v1::types::CREATED);

  h.runtime.restore_error = absl::OkStatus();
  auto started = h.Call<task::StartResponse>("Start", start);
  REQUIRE(started.ok());
  const pid_t pid = static_cast<pid_t>(started->pid());
  CHECK(pid > 0);
  auto st = h.State("c1");
  CHECK(st.status() == containerd::v1::types::RUNNING);
  CHECK(static_cast<pid_t>(st.pid()) == pid);
  CHECK(h.runtime.Calls() == std::vector<std::string>{"restore c1 /ckpt/images parent=/ckpt/parent",
                                                      "restore c1 /ckpt/images parent=/ckpt/parent"});
  auto exits = h.exits.Calls();
  CHECK(std::count(exits.begin(), exits.end(), "spawner 500") == 2);
  // A second Start is refused, as for any started init.
  CHECK(absl::IsFailedPrecondition(h.Call<task::StartResponse>("Start", start).status()));
  h.Exit(pid, 7);
  CHECK(h.State("c1").exit_status() == 7);
  CHECK(h.Events() ==
        std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit c1"});
}

task::UpdateTaskRequest UpdateRequest(const std::string& id, const std::string& resources) {
  task::UpdateTaskRequest req;
  req.set_id(id);
  req.mutable_resources()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/LinuxResources");
  req.mutable_resources()->set_value(resources);
  (*req.mutable_annotations())["ignored"] = "as by runc-v2";
  return req;
}

TEST_CASE("task service: Update runs runc update with containerd's resources, while the task "
          "lives",
          "[unit][task][update]") {
  Harness h;
  const std::string limit = R"({"memory":{"limit":67108864}})";
  REQUIRE(h.Call<task::CreateTaskResponse>("Create", h.CreateRequest("c1")).ok());
  // Created, running and paused take an update.
  REQUIRE(h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", limit)).ok());
  task::StartRequest start = StartRequest("c1");
  auto started = h.Call<task::StartResponse>("Start", start);
  REQUIRE(started.ok());
  REQUIRE(h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", limit)).ok());
  // A replayed one runs again: runc sets the same values.
  REQUIRE(h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", limit), true).ok());
  task::PauseRequest pause;
  pause.set_id("c1");
  REQUIRE(h.Call<google::protobuf::Empty>("Pause", pause).ok());
  REQUIRE(h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", limit)).ok());

  // runc's refusal, in its words; the task goes on.
  h.runtime.update_error = absl::UnknownError("runc update: invalid memory value");
  auto refused = h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", R"({"bad":1})"));
  CHECK(refused.status().message() == "runc update: invalid memory value");
  CHECK(h.State("c1").status() == containerd::v1::types::PAUSED);
  h.runtime.update_error = absl::OkStatus();

  // No resources, no such container: clear errors, no runc.
  CHECK(absl::IsInvalidArgument(
      h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", "")).status()));
  CHECK(absl::IsNotFound(
      h.Call<google::protobuf::Empty>("Update", UpdateRequest("nosuch", limit)).status()));

  // A stopped container: runc-v2's error, and runc is not asked.
  h.Exit(static_cast<pid_t>(started->pid()), 0);
  auto stopped = h.Call<google::protobuf::Empty>("Update", UpdateRequest("c1", limit));
  CHECK(absl::IsFailedPrecondition(stopped.status()));
  CHECK(stopped.status().message() == "cannot update a stopped container");

  const std::string update = "update c1 " + limit;
  CHECK(h.runtime.Calls() ==
        std::vector<std::string>{"create c1", update, "start c1", update, update, "pause c1",
                                 update, R"(update c1 {"bad":1})"});
  // Update publishes nothing (as runc-v2).
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/paused",
                                               "/tasks/exit c1"});
}

TEST_CASE("task service: one TaskOOM per OOM kill, before the init's TaskExit",
          "[unit][task][oom]") {
  Harness h;
  // Kills the cgroup counted before this container are not its news.
  h.SetOomCount("c1", 2);
  pid_t pid = h.CreateAndStart("c1");
  h.OomKills("c1", 2);  // a notification without a new kill
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start"});
  h.OomKills("c1", 3);
  h.OomKills("c1", 3);  // the same count again (v1 reads it more than once)
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/oom"});
  // The init is the victim of two more: the kernel counted them before its
  // exit, which reads the count before it reports.
  h.SetOomCount("c1", 5);
  h.Exit(pid, 137);
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/oom",
                                               "/tasks/oom", "/tasks/oom", "/tasks/exit c1"});
  task::DeleteRequest del;
  del.set_id("c1");
  REQUIRE(h.Call<task::DeleteResponse>("Delete", del).ok());
  CHECK(h.OomCalls() == std::vector<std::string>{"watch c1", "unwatch c1"});
  // A container without a memory cgroup runs without OOM events.
  h.CreateAndStart("c2");
  CHECK(h.OomCalls().back() == "watch c2");
}

TEST_CASE("task service: a restarted server publishes the OOM kills it missed, once",
          "[unit][task][oom][replay]") {
  Harness h;
  h.SetOomCount("c1", 0);
  pid_t pid = h.CreateAndStart("c1");
  h.OomKills("c1", 1);
  // Killed with one published; one more came while no server ran.
  h.SetOomCount("c1", 2);
  h.Restart();
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/oom",
                                               "/tasks/oom"});
  h.Restart();  // nothing new
  CHECK(h.Events().size() == 4);
  // A server that spooled TaskOOM and died before it persisted the count:
  // the next one does not publish it again.
  h.SetOomCount("c1", 3);
  h.events.spooled = {"/tasks/oom"};
  h.Restart();
  CHECK(h.Events().size() == 4);
  h.events.spooled.clear();
  h.Restart();
  CHECK(h.Events().size() == 4);
  // The init died of an OOM while no server ran: TaskOOM, then TaskExit.
  h.SetOomCount("c1", 4);
  bpf::ExitRecord exit;
  exit.pid = pid;
  exit.wait_status = SIGKILL;
  exit.exited_at_ns = 1'700'000'000'000'000'000;
  h.Restart({exit});
  auto events = h.Events();
  REQUIRE(events.size() == 6);
  CHECK(events[4] == "/tasks/oom");
  CHECK(events[5] == "/tasks/exit c1");
  CHECK(h.State("c1").exit_status() == 137);
}

TEST_CASE("task service: Create keeps the options; ShimCgroup does not fail it",
          "[unit][task][options]") {
  Harness h;
  auto req = h.CreateRequest("c1");
  containerd::linux::runc::CreateOptions o;  // what the Go client sends us
  o.set_shim_cgroup("/no/such/cgroup");
  o.set_io_uid(1000);
  o.set_io_gid(1001);
  o.set_no_pivot_root(true);
  req.mutable_options()->set_type_url(o.GetTypeName());
  req.mutable_options()->set_value(o.SerializeAsString());
  auto created = h.Call<task::CreateTaskResponse>("Create", req);
  REQUIRE(created.ok());
  std::lock_guard lock(h.runtime.mu);
  const embedshim::RuntimeOptions& got = h.runtime.created_options;
  CHECK(got.shim_cgroup() == "/no/such/cgroup");
  CHECK(got.io_uid() == 1000);
  CHECK(got.io_gid() == 1001);
  CHECK(got.no_pivot_root());
  CHECK(got.binary_name() == "runc");  // defaults filled
}

TEST_CASE("task service: Create with options of an unknown type fails, naming it",
          "[unit][task][options]") {
  Harness h;
  auto req = h.CreateRequest("c1");
  req.mutable_options()->set_type_url("acme.Options");
  auto created = h.Call<task::CreateTaskResponse>("Create", req);
  REQUIRE(created.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(created.status().message()).find("acme.Options are not supported") !=
        std::string::npos);
  CHECK(h.runtime.Calls().empty());
}

// A dead server's Create whose `runc create` had been spawned (its marker
// names it) and still runs: the next server waits for it and takes the
// init it created; the replayed Create answers only then, with that pid,
// and no second create runs (two at once broke in the storm: "unable to
// store init state").
TEST_CASE("task service: a replayed Create adopts what the dead server's runc create made",
          "[unit][task][replay]") {
  Harness h;
  task::CreateTaskRequest req = h.CreateRequest("c1");
  embedshim::ContainerRecord r;
  r.set_namespace_("ns");
  r.set_id("c1");
  r.set_bundle(req.bundle());
  r.set_status(embedshim::CREATING);
  BlockedChild runc, init;
  shim::process::WriteRuntimeMarker(shim::process::CreateRuntimeMarker(req.bundle()), runc.pid());
  REQUIRE(test_support::WriteFile(req.bundle() + "/init.pid", std::to_string(init.pid())).ok());
  h.SaveRecord(r);
  h.Restart();
  const uint32_t replay = h.Send("Create", req, /*replayed=*/true);
  CHECK_FALSE(h.Answered(replay));  // the orphan still runs
  runc.Finish();
  auto raw = h.Await(replay);
  REQUIRE(raw.ok());
  task::CreateTaskResponse created;
  REQUIRE(created.ParseFromString(*raw));
  CHECK(static_cast<pid_t>(created.pid()) == init.pid());
  CHECK(h.runtime.Calls().empty());
  CHECK(h.Events() == std::vector<std::string>{"/tasks/create"});
  // The dead server's holds of the output go with the create it began.
  auto keeper = h.KeeperCalls();
  CHECK(std::count(keeper.begin(), keeper.end(), "drop hold0/ns/c1") == 1);
  CHECK(std::count(keeper.begin(), keeper.end(), "drop hold1/ns/c1") == 1);
  CHECK(h.State("c1").status() == containerd::v1::types::CREATED);
  CHECK(access(shim::process::CreateRuntimeMarker(req.bundle()).c_str(), F_OK) != 0);
  // A server killed now finds it created.
  h.Restart();
  CHECK(static_cast<pid_t>(h.State("c1").pid()) == init.pid());
}

TEST_CASE("task service: a dead server's create that failed is undone, and the replay creates "
          "afresh",
          "[unit][task][replay]") {
  Harness h;
  task::CreateTaskRequest req = h.CreateRequest("c1");
  embedshim::ContainerRecord r;
  r.set_namespace_("ns");
  r.set_id("c1");
  r.set_bundle(req.bundle());
  r.set_status(embedshim::CREATING);
  BlockedChild runc;
  shim::process::WriteRuntimeMarker(shim::process::CreateRuntimeMarker(req.bundle()), runc.pid());
  h.SaveRecord(r);  // no init.pid: that runc create fails
  h.Restart();
  const uint32_t replay = h.Send("Create", req, /*replayed=*/true);
  CHECK_FALSE(h.Answered(replay));
  runc.Finish();
  auto raw = h.Await(replay);
  REQUIRE(raw.ok());
  task::CreateTaskResponse created;
  REQUIRE(created.ParseFromString(*raw));
  CHECK(created.pid() == 1000);  // the fake runtime's
  CHECK(h.runtime.Calls() == std::vector<std::string>{"delete c1 true", "create c1"});
}

// A dead server's exec Start whose `runc exec` finished (its pid file is
// there) while no server ran: recovery adopts the exec, and the replayed
// Start finds it started. The output holds that server took go then:
// nobody else would drop them, and the reader would never see EOF.
TEST_CASE("task service: recovery that adopts an exec drops the dead server's output holds",
          "[unit][task][exec][replay]") {
  Harness h;
  h.CreateAndStart("c1");
  REQUIRE(h.Call<google::protobuf::Empty>("Exec", ExecRequest("c1", "e1")).ok());
  BlockedChild exec;
  REQUIRE(test_support::WriteFile(
              shim::process::ExecPidFile(h.State("c1").bundle(), "e1"), std::to_string(exec.pid()))
              .ok());
  h.Restart();
  auto keeper = h.KeeperCalls();
  CHECK(std::count(keeper.begin(), keeper.end(), "drop hold0/ns/c1/e1") == 1);
  CHECK(std::count(keeper.begin(), keeper.end(), "drop hold1/ns/c1/e1") == 1);
  auto started = h.Call<task::StartResponse>("Start", StartRequest("c1", "e1"), /*replayed=*/true);
  REQUIRE(started.ok());
  CHECK(static_cast<pid_t>(started->pid()) == exec.pid());
  CHECK(h.runtime.Calls() == std::vector<std::string>{"create c1", "start c1"});
}

TEST_CASE("task service: a restarted server moves corrupt records aside and serves the rest",
          "[unit][task][recover]") {
  Harness h;
  h.CreateAndStart("c1");
  h.CreateAndStart("c2");
  const std::string ns_dir = h.StateDir() + "/ns";
  // c2's record torn; c3's names one exec twice (the second would replace
  // the first while the exit router still pointed at it).
  REQUIRE(test_support::WriteFile(ns_dir + "/c2.pb", "\x0a\x05ns", 0600).ok());
  embedshim::ContainerRecord c3;
  c3.set_namespace_("ns");
  c3.set_id("c3");
  c3.set_status(embedshim::RUNNING);
  c3.set_pid(4000);
  for (int i = 0; i < 2; ++i) {
    auto* e = c3.add_execs();
    e->set_exec_id("e1");
    e->set_status(embedshim::RUNNING);
    e->set_pid(4001);
  }
  REQUIRE(test_support::WriteFile(ns_dir + "/c3.pb", c3.SerializeAsString(), 0600).ok());
  h.Restart();
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
  task::StateRequest req;
  req.set_id("c2");
  CHECK(h.Call<task::StateResponse>("State", req).status().code() == absl::StatusCode::kNotFound);
  req.set_id("c3");
  CHECK(h.Call<task::StateResponse>("State", req).status().code() == absl::StatusCode::kNotFound);
  size_t aside = 0;
  for (const auto& e : std::filesystem::directory_iterator(ns_dir))
    aside += e.path().filename().string().find(".pb.corrupt-") != std::string::npos;
  CHECK(aside == 2);
  h.Exit(4001, 0);  // nobody's: no crash, nothing published
  h.Restart();      // the next server meets only c1
  CHECK(h.State("c1").status() == containerd::v1::types::RUNNING);
}
