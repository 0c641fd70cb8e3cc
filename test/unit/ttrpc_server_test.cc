// The server, driven through a raw socket relayed to it as the keeper does
// (test::SocketRelay): protocol errors, routing, deadlines, concurrency,
// and clients that go away.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>

#include "test/support/ttrpc_socket_relay.h"
#include "test/unit/ttrpc_test_util.h"
#include "ttrpc/server.h"
#include "ttrpc/ttrpc.pb.h"
#include "ttrpc/wire.h"

namespace {

using ttrpc::EncodeFrame;
using ttrpc::EncodeRequestFrame;
using ttrpc::MessageType;

// A server on a loop thread with test handlers, and one raw client socket.
struct Fixture {
  test::LoopThread lt;
  std::unique_ptr<ttrpc::Server> server;
  std::unique_ptr<test::SocketRelay> relay;
  base::UniqueFd peer;  // the test's end
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ttrpc::Responder> held;
  size_t disconnects = 0;

  explicit Fixture(uint32_t max = ttrpc::kMaxMessageSize) {
    ttrpc::ServerOptions opts;
    opts.max_message_size = max;
    opts.on_disconnect = [this](uint64_t) {
      std::lock_guard lock(mu);
      ++disconnects;
      cv.notify_all();
    };
    server = std::make_unique<ttrpc::Server>(lt.loop(), opts);
    server->Register("test.Echo", "Echo", [](ttrpc::RequestContext, std::string payload,
                                             ttrpc::Responder r) { r.Reply(payload); });
    server->Register("test.Echo", "Metadata",
                     [](ttrpc::RequestContext ctx, std::string, ttrpc::Responder r) {
                       auto v = ttrpc::FindMetadata(ctx.metadata, "k");
                       r.Reply(std::string(v.value_or("<none>")));
                     });
    // Holds the request until the test replies to it.
    server->Register("test.Slow", "Hold",
                     [this](ttrpc::RequestContext, std::string, ttrpc::Responder r) {
                       std::lock_guard lock(mu);
                       held.push_back(r);
                       cv.notify_all();
                     });
    relay = std::make_unique<test::SocketRelay>(lt.loop(), *server, max);
    auto [a, b] = test::SocketPair();
    peer = std::move(a);
    lt.Sync([&, fd = b.Release()]() mutable {
      REQUIRE(relay->Add(base::UniqueFd(fd)).ok());
    });
  }
  ~Fixture() {
    lt.Sync([&] {
      relay.reset();
      server.reset();
    });
  }

  void WaitDisconnects(size_t n) {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return disconnects >= n; }));
  }

  void WaitHeld(size_t n) {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held.size() >= n; }));
  }

  void Send(uint32_t stream, std::string_view service, std::string_view method,
            std::string_view payload = "", ttrpc::Metadata md = {},
            absl::Duration timeout = absl::InfiniteDuration()) {
    test::WriteAll(peer.get(), EncodeRequestFrame(stream, service, method, payload, md, timeout));
  }

  // Reads a response frame and decodes it.
  ttrpc::Response Receive(uint32_t* stream = nullptr) {
    auto f = test::ReadFrame(peer.get());
    REQUIRE(f.has_value());
    REQUIRE(f->header.type == static_cast<uint8_t>(MessageType::kResponse));
    if (stream) *stream = f->header.stream_id;
    ttrpc::Response r;
    REQUIRE(r.ParseFromArray(f->payload().data(), static_cast<int>(f->payload().size())));
    return r;
  }
};

}  // namespace

TEST_CASE("server answers a unary request on the request's stream") {
  Fixture fx;
  fx.Send(1, "test.Echo", "Echo", "hello");
  uint32_t stream = 0;
  auto r = fx.Receive(&stream);
  CHECK(stream == 1);
  CHECK(r.payload() == "hello");
  CHECK(ttrpc::StatusOf(r).ok());
}

TEST_CASE("metadata reaches the handler") {
  Fixture fx;
  fx.Send(1, "test.Echo", "Metadata", "", {{"k", "v1"}});
  CHECK(fx.Receive().payload() == "v1");
}

TEST_CASE("unknown service or method gets Unimplemented and the connection lives") {
  Fixture fx;
  fx.Send(1, "no.Such", "Thing");
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kUnimplemented));
  CHECK(r.status().message() == "service no.Such");
  fx.Send(3, "test.Echo", "Nope");
  r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kUnimplemented));
  CHECK(r.status().message() == "method Nope");
  fx.Send(5, "test.Echo", "Echo", "still here");
  CHECK(fx.Receive().payload() == "still here");
}

TEST_CASE("an even stream id is refused with InvalidArgument") {
  Fixture fx;
  fx.Send(2, "test.Echo", "Echo", "x");
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
  fx.Send(3, "test.Echo", "Echo", "y");
  CHECK(fx.Receive().payload() == "y");
}

TEST_CASE("a frame that is not a Request protobuf gets InvalidArgument") {
  Fixture fx;
  test::WriteAll(fx.peer.get(), EncodeFrame(1, MessageType::kRequest, "\xff\xff\xff"));
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
}

TEST_CASE("an unknown message type gets a clear error and closes only that connection") {
  Fixture fx;
  // A second, healthy connection.
  auto [a, b] = test::SocketPair();
  fx.lt.Sync([&, fd = b.Release()]() mutable {
    REQUIRE(fx.relay->Add(base::UniqueFd(fd)).ok());
  });

  test::WriteAll(fx.peer.get(), EncodeFrame(1, static_cast<MessageType>(0x7f), "junk"));
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
  CHECK_THAT(r.status().message(), Catch::Contains("unexpected message type 0x7f"));
  CHECK(test::WaitEof(fx.peer.get()));

  test::WriteAll(a.get(), EncodeRequestFrame(1, "test.Echo", "Echo", "ok", {},
                                             absl::InfiniteDuration()));
  auto f = test::ReadFrame(a.get());
  REQUIRE(f.has_value());
  ttrpc::Response ok;
  REQUIRE(ok.ParseFromArray(f->payload().data(), static_cast<int>(f->payload().size())));
  CHECK(ok.payload() == "ok");
}

TEST_CASE("a frame of max size is served; max size + 1 gets ResourceExhausted and a close") {
  Fixture fx(1024);
  // The largest payload that keeps the encoded Request at exactly 1024 bytes.
  std::string payload(1024 - 20, 'p');
  std::string frame = EncodeRequestFrame(1, "test.Echo", "Echo", payload, {},
                                         absl::InfiniteDuration());
  while (frame.size() - ttrpc::kHeaderSize > 1024) {
    payload.pop_back();
    frame = EncodeRequestFrame(1, "test.Echo", "Echo", payload, {}, absl::InfiniteDuration());
  }
  REQUIRE(frame.size() - ttrpc::kHeaderSize == 1024);
  test::WriteAll(fx.peer.get(), frame);
  CHECK(fx.Receive().payload() == payload);

  payload.push_back('p');
  fx.Send(3, "test.Echo", "Echo", payload);
  uint32_t stream = 0;
  auto r = fx.Receive(&stream);
  CHECK(stream == 3);
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kResourceExhausted));
  CHECK_THAT(r.status().message(), Catch::Contains("exceeds maximum message size of 1024"));
  CHECK(test::WaitEof(fx.peer.get()));
}

TEST_CASE("a slow handler does not block other requests on the same connection") {
  Fixture fx;
  fx.Send(1, "test.Slow", "Hold");
  fx.WaitHeld(1);
  fx.Send(3, "test.Echo", "Echo", "fast");
  uint32_t stream = 0;
  CHECK(fx.Receive(&stream).payload() == "fast");
  CHECK(stream == 3);
  // The held request is answered later, from another thread.
  std::thread([&] { fx.held[0].Reply(std::string("slow")); }).join();
  CHECK(fx.Receive(&stream).payload() == "slow");
  CHECK(stream == 1);
}

TEST_CASE("timeout_nano is honoured: an unanswered request gets DeadlineExceeded") {
  Fixture fx;
  fx.Send(1, "test.Slow", "Hold", "", {}, absl::Milliseconds(50));
  fx.WaitHeld(1);
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  // A late reply is dropped, not sent as a second response.
  fx.held[0].Reply(std::string("late"));
  fx.Send(3, "test.Echo", "Echo", "after");
  uint32_t stream = 0;
  CHECK(fx.Receive(&stream).payload() == "after");
  CHECK(stream == 3);
}

TEST_CASE("a client that disconnects with requests pending leaves nothing behind") {
  Fixture fx;
  fx.Send(1, "test.Slow", "Hold");
  fx.Send(3, "test.Slow", "Hold");
  fx.WaitHeld(2);
  CHECK(fx.lt.Sync([&] { return fx.server->pending_requests(); }) == 2);
  fx.peer.Reset();
  fx.WaitDisconnects(1);
  CHECK(fx.lt.Sync([&] { return fx.server->pending_requests(); }) == 0);
  CHECK(fx.lt.Sync([&] { return fx.server->connection_count(); }) == 0);
  // Replies to the vanished client are dropped safely, from any thread.
  fx.held[0].Reply(std::string("nobody listens"));
  std::thread([&] { fx.held[1].Reply(absl::InternalError("nor here")); }).join();
  CHECK(fx.lt.Sync([&] { return fx.server->pending_requests(); }) == 0);
}

TEST_CASE("a response-type frame sent to the server is a protocol error") {
  Fixture fx;
  test::WriteAll(fx.peer.get(), ttrpc::EncodeResponseFrame(1, std::string_view("x")));
  auto r = fx.Receive();
  CHECK(r.status().code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
  CHECK(test::WaitEof(fx.peer.get()));
}
