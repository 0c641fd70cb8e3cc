// A real peer proves the wire format: our ttrpc client talks to containerd
// 1.6's own ttrpc server (Go, containerd/ttrpc v1.1.1) the way a shim does,
// calling containerd.services.events.ttrpc.v1.Events/Forward, and `ctr events`
// shows what containerd made of it.
//
// `ctr events` prints one line per event:
//   2026-11-24 02:52:25.477840661 +0000 UTC <ns> /tasks/exit {"container_id":"c1",...}
// i.e. four timestamp fields, the namespace, the topic and the event as JSON.
// Events of a type ctr cannot decode are skipped (only logged), so every event
// sent here is a registered containerd.events type.
//
// ctr's stdout goes into a FIFO that the test reads line by line with poll()
// and a deadline. `ctr events` only sees events published after its
// subscription is in place, and nothing tells when that is; so the test
// forwards numbered TaskOOM probes until one comes out (each probe waits for
// output with a short deadline; there are no sleeps).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "events_task.pb.h"
#include "events_ttrpc.pb.h"
#include "fmt/format.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"
#include "ttrpc/client.h"

namespace {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::Deadline;
using test_support::DeadlineIn;
using test_support::PrivateContainerd;
using test_support::Subprocess;
using test_support::UniqueName;
namespace evpb = containerd::services::events::ttrpc::v1;

constexpr char kEventsService[] = "containerd.services.events.ttrpc.v1.Events";
constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

// Reads a non-blocking fd line by line, keeping every complete line seen.
class LineReader {
 public:
  explicit LineReader(base::UniqueFd fd) : fd_(std::move(fd)) {}

  // The first complete line (without its '\n') satisfying `match`, reading
  // more until `deadline`. DeadlineExceeded at the deadline, FailedPrecondition
  // on EOF (the writer is gone).
  absl::StatusOr<std::string> WaitForLine(const std::function<bool(std::string_view)>& match,
                                          Deadline deadline) {
    for (;;) {
      for (const std::string& line : lines_) {
        if (match(line)) return line;
      }
      if (eof_) return absl::FailedPreconditionError(Describe("the writer closed its end"));
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return absl::DeadlineExceededError(Describe("no matching line"));
      pollfd p{fd_.get(), POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60'000)));
      if (n < 0 && errno != EINTR) return base::ErrnoStatus("poll");
      if (n <= 0) continue;
      if (absl::Status s = ReadAvailable(); !s.ok()) return s;
    }
  }

  const std::vector<std::string>& lines() const { return lines_; }
  std::string Text() const {
    std::string all;
    for (const std::string& l : lines_) all += l + "\n";
    return all + partial_;
  }

 private:
  absl::Status ReadAvailable() {
    char buf[16384];
    for (;;) {
      ssize_t n = read(fd_.get(), buf, sizeof buf);
      if (n > 0) {
        partial_.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = partial_.find('\n')) != std::string::npos) {
          lines_.push_back(partial_.substr(0, nl));
          partial_.erase(0, nl + 1);
        }
        continue;
      }
      if (n == 0) {
        eof_ = true;
        return absl::OkStatus();
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return absl::OkStatus();
      return base::ErrnoStatus("read");
    }
  }

  std::string Describe(std::string_view why) const {
    return fmt::format("{}; output so far:\n{}", why, Text());
  }

  base::UniqueFd fd_;
  std::string partial_;
  std::vector<std::string> lines_;
  bool eof_ = false;
};

// One line of `ctr events` output, split up.
struct EventLine {
  std::string ns;
  std::string topic;
  std::string json;
};

std::optional<EventLine> ParseEventLine(std::string_view line) {
  // "<date> <time> <zone offset> <zone name> <ns> <topic> <json>"
  size_t pos = 0;
  for (int i = 0; i < 4; ++i) {
    pos = line.find(' ', pos);
    if (pos == std::string_view::npos) return std::nullopt;
    ++pos;
  }
  std::string_view rest = line.substr(pos);
  size_t a = rest.find(' ');
  if (a == std::string_view::npos) return std::nullopt;
  size_t b = rest.find(' ', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  return EventLine{std::string(rest.substr(0, a)), std::string(rest.substr(a + 1, b - a - 1)),
                   std::string(rest.substr(b + 1))};
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

google::protobuf::Timestamp Now() {
  int64_t ns = absl::ToUnixNanos(absl::Now());
  google::protobuf::Timestamp t;
  t.set_seconds(ns / 1'000'000'000);
  t.set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
  return t;
}

// An Any the way containerd 1.6 writes one: the bare full name as type_url.
template <class Msg>
google::protobuf::Any Pack(const Msg& msg) {
  google::protobuf::Any any;
  any.set_type_url(Msg::descriptor()->full_name());
  any.set_value(msg.SerializeAsString());
  return any;
}

template <class Msg>
evpb::ForwardRequest Envelope(std::string_view ns, std::string_view topic, const Msg& event) {
  evpb::ForwardRequest req;
  evpb::Envelope* env = req.mutable_envelope();
  *env->mutable_timestamp() = Now();
  env->set_namespace_(std::string(ns));
  env->set_topic(std::string(topic));
  *env->mutable_event() = Pack(event);
  return req;
}

containerd::events::TaskExit TaskExit(std::string_view container_id, std::string_view id) {
  containerd::events::TaskExit exit;
  exit.set_container_id(std::string(container_id));
  exit.set_id(std::string(id));
  exit.set_pid(42);
  exit.set_exit_status(7);
  *exit.mutable_exited_at() = Now();
  return exit;
}

// What a shim sends with every Forward (runtime/v2/shim/publisher.go).
ttrpc::CallOptions ShimCallOptions(std::string_view ns) {
  ttrpc::CallOptions o;
  o.metadata = {{kNamespaceKey, std::string(ns)}};
  o.timeout = absl::Seconds(5);
  return o;
}

absl::Status Forward(ttrpc::BlockingClient& client, std::string_view ns,
                     const evpb::ForwardRequest& req) {
  return client
      .Call<google::protobuf::Empty>(kEventsService, "Forward", req, ShimCallOptions(ns))
      .status();
}

// A private containerd, `ctr events` watching it, and our client connected
// to containerd's ttrpc socket. Members are destroyed in reverse order: the
// client, then ctr, then containerd.
struct Peer {
  std::unique_ptr<PrivateContainerd> cd;
  std::optional<Subprocess> ctr_events;
  std::unique_ptr<LineReader> events;
  std::unique_ptr<ttrpc::BlockingClient> client;
  // Everything ctr printed, for INFO().
  std::string Describe() const {
    return fmt::format("ctr events stdout:\n{}\nctr events stderr:\n{}",
                       events ? events->Text() : "", ctr_events ? ctr_events->err() : "");
  }
};

absl::StatusOr<base::UniqueFd> MakeFifoReader(const std::string& path) {
  if (mkfifo(path.c_str(), 0600) != 0) return base::ErrnoStatus(fmt::format("mkfifo {}", path));
  // Opened before ctr starts, so that ctr's (blocking) open for writing
  // finds a reader at once.
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus(fmt::format("open {}", path));
  return fd;
}

// Forwards TaskOOM probes into `ns` until `ctr events` prints one: from then
// on ctr's subscription is in place and sees every later event.
absl::Status WaitUntilSubscribed(Peer& peer, const std::string& ns, Deadline deadline) {
  for (int probe = 0; Clock::now() < deadline; ++probe) {
    const std::string id = fmt::format("probe-{}", probe);
    containerd::events::TaskOOM oom;
    oom.set_container_id(id);
    if (absl::Status s = Forward(*peer.client, ns, Envelope(ns, "/tasks/oom", oom)); !s.ok())
      return s;
    // Every probe sent so far counts: a late one still proves the subscription.
    absl::StatusOr<std::string> line = peer.events->WaitForLine(
        [&](std::string_view l) {
          std::optional<EventLine> e = ParseEventLine(l);
          return e && e->ns == ns && e->topic == "/tasks/oom" &&
                 Contains(e->json, "\"container_id\":\"probe-");
        },
        std::min(deadline, DeadlineIn(200ms)));
    if (line.ok()) return absl::OkStatus();
    if (!absl::IsDeadlineExceeded(line.status())) return line.status();
  }
  return absl::DeadlineExceededError("ctr events never printed a probe event");
}

absl::StatusOr<Peer> StartPeer(bool watch_events) {
  Peer peer;
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start();
  if (!cd.ok()) return cd.status();
  peer.cd = std::move(*cd);
  if (watch_events) {
    const std::string fifo = peer.cd->dir() + "/" + UniqueName("ctr-events") + ".fifo";
    absl::StatusOr<base::UniqueFd> reader = MakeFifoReader(fifo);
    if (!reader.ok()) return reader.status();
    peer.events = std::make_unique<LineReader>(std::move(*reader));
    test_support::SpawnOptions o;
    o.out = test_support::OutputSpec::File(fifo);
    absl::StatusOr<Subprocess> ctr = peer.cd->RunCtrAsync({"events"}, std::move(o));
    if (!ctr.ok()) return ctr.status();
    peer.ctr_events = std::move(*ctr);
  }
  absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> client =
      ttrpc::BlockingClient::Connect(peer.cd->ttrpc_address());
  if (!client.ok()) return client.status();
  peer.client = std::move(*client);
  return peer;
}

bool IsExitLine(std::string_view line, const std::string& ns, const std::string& container_id,
                const std::string& id) {
  std::optional<EventLine> e = ParseEventLine(line);
  return e && e->ns == ns && e->topic == "/tasks/exit" &&
         Contains(e->json, fmt::format("\"container_id\":\"{}\"", container_id)) &&
         Contains(e->json, fmt::format("\"id\":\"{}\"", id));
}

TEST_CASE("Forward: a TaskExit sent by our client comes out of `ctr events`",
          "[containerd][ttrpc][events]") {
  absl::StatusOr<Peer> started = StartPeer(/*watch_events=*/true);
  REQUIRE_OK(started);
  Peer& peer = *started;
  const std::string ns = UniqueName("fwd");
  INFO("namespace " << ns);
  REQUIRE_OK(WaitUntilSubscribed(peer, ns, DeadlineIn(60s)));

  const std::string container_id = UniqueName("ctr");
  const std::string exec_id = UniqueName("exec");
  absl::Status forwarded = Forward(*peer.client, ns,
                                   Envelope(ns, "/tasks/exit", TaskExit(container_id, exec_id)));
  INFO(peer.Describe());
  REQUIRE_OK(forwarded);

  absl::StatusOr<std::string> line = peer.events->WaitForLine(
      [&](std::string_view l) { return IsExitLine(l, ns, container_id, exec_id); },
      DeadlineIn(30s));
  REQUIRE_OK(line);
  INFO("line: " << *line);
  std::optional<EventLine> e = ParseEventLine(*line);
  REQUIRE(e.has_value());
  CHECK(Contains(e->json, "\"pid\":42"));
  CHECK(Contains(e->json, "\"exit_status\":7"));
  CHECK(Contains(e->json, "\"exited_at\":\""));
  CHECK(peer.client->client().unmatched_responses() == 0);
}

TEST_CASE("Forward: 64 calls in flight on one connection all succeed and all arrive",
          "[containerd][ttrpc][events]") {
  absl::StatusOr<Peer> started = StartPeer(/*watch_events=*/true);
  REQUIRE_OK(started);
  Peer& peer = *started;
  const std::string ns = UniqueName("many");
  INFO("namespace " << ns);
  REQUIRE_OK(WaitUntilSubscribed(peer, ns, DeadlineIn(60s)));

  // All calls are started before any reply can be awaited: the Go server
  // serves them concurrently and may answer out of order.
  constexpr size_t kCalls = 64;
  const std::string container_id = UniqueName("ctr");
  // Shared with the callbacks, which run on the client's loop thread and
  // could outlive this scope if a REQUIRE below fails.
  struct Results {
    std::mutex mu;
    std::vector<absl::Status> statuses;
    std::promise<void> all_done;
  };
  auto results = std::make_shared<Results>();
  std::future<void> all_done = results->all_done.get_future();
  for (size_t i = 0; i < kCalls; ++i) {
    evpb::ForwardRequest req =
        Envelope(ns, "/tasks/exit", TaskExit(container_id, fmt::format("exec-{}", i)));
    peer.client->client().Call(
        kEventsService, "Forward", req.SerializeAsString(), ShimCallOptions(ns),
        [results](absl::StatusOr<std::string> reply) {
          google::protobuf::Empty empty;
          if (reply.ok() && !empty.ParseFromString(*reply))
            reply = absl::InternalError("reply is not a google.protobuf.Empty");
          std::lock_guard lock(results->mu);
          results->statuses.push_back(reply.status());
          if (results->statuses.size() == kCalls) results->all_done.set_value();
        });
  }
  REQUIRE(all_done.wait_for(60s) == std::future_status::ready);
  {
    std::lock_guard lock(results->mu);
    for (const absl::Status& s : results->statuses) CHECK_OK(s);
  }
  CHECK(peer.client->client().unmatched_responses() == 0);

  for (size_t i = 0; i < kCalls; ++i) {
    const std::string id = fmt::format("exec-{}", i);
    absl::StatusOr<std::string> line = peer.events->WaitForLine(
        [&](std::string_view l) { return IsExitLine(l, ns, container_id, id); },
        DeadlineIn(30s));
    INFO(peer.Describe());
    REQUIRE_OK(line);
  }
}

TEST_CASE("Forward: containerd's InvalidArgument decodes as code 3 with its message",
          "[containerd][ttrpc][events]") {
  absl::StatusOr<Peer> started = StartPeer(/*watch_events=*/false);
  REQUIRE_OK(started);
  Peer& peer = *started;
  const std::string ns = UniqueName("bad");
  const containerd::events::TaskExit exit = TaskExit(UniqueName("ctr"), "init");

  // No timestamp (exchange.go validateEnvelope: "timestamp must be set").
  evpb::ForwardRequest req = Envelope(ns, "/tasks/exit", exit);
  req.mutable_envelope()->clear_timestamp();
  absl::Status st = Forward(*peer.client, ns, req);
  INFO(st.ToString());
  CHECK(static_cast<int>(st.code()) == 3);
  CHECK(absl::IsInvalidArgument(st));
  CHECK(Contains(base::ToStd(st.message()), "timestamp must be set on forwarded event"));

  // A namespace that is no identifier.
  st = Forward(*peer.client, ns, Envelope("Not A Namespace!", "/tasks/exit", exit));
  INFO(st.ToString());
  CHECK(absl::IsInvalidArgument(st));
  CHECK(Contains(base::ToStd(st.message()), "invalid namespace"));

  // A topic without the leading '/'.
  st = Forward(*peer.client, ns, Envelope(ns, "tasks/exit", exit));
  INFO(st.ToString());
  CHECK(absl::IsInvalidArgument(st));
  CHECK(Contains(base::ToStd(st.message()), "must start with '/'"));

  // Errors are per call: the connection still carries a valid Forward.
  CHECK_OK(Forward(*peer.client, ns, Envelope(ns, "/tasks/exit", exit)));
  CHECK_FALSE(peer.client->client().closed());
}

TEST_CASE("containerd's ttrpc server: unknown methods and services are Unimplemented (12)",
          "[containerd][ttrpc]") {
  absl::StatusOr<Peer> started = StartPeer(/*watch_events=*/false);
  REQUIRE_OK(started);
  Peer& peer = *started;
  ttrpc::CallOptions timeout;
  timeout.timeout = absl::Seconds(30);

  absl::StatusOr<std::string> r =
      peer.client->Call(kEventsService, "NoSuchMethod", "", timeout);
  INFO(r.status().ToString());
  CHECK(static_cast<int>(r.status().code()) == 12);
  CHECK(absl::IsUnimplemented(r.status()));
  CHECK(base::ToStd(r.status().message()) == "method NoSuchMethod");

  r = peer.client->Call("containerd.no.such.v1.Service", "Forward", "", timeout);
  INFO(r.status().ToString());
  CHECK(absl::IsUnimplemented(r.status()));
  CHECK(base::ToStd(r.status().message()) == "service containerd.no.such.v1.Service");

  // A payload that is no ForwardRequest: ttrpc's unmarshal fails (Internal).
  r = peer.client->Call(kEventsService, "Forward", std::string("\xff\xff\xff", 3), timeout);
  INFO(r.status().ToString());
  CHECK(absl::IsInternal(r.status()));

  const std::string ns = UniqueName("ok");
  CHECK_OK(Forward(*peer.client, ns, Envelope(ns, "/tasks/exit", TaskExit("c", "c"))));
  CHECK(peer.client->client().unmatched_responses() == 0);
}

}  // namespace
