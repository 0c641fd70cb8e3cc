// The client against a raw server socket, and against our own server over a
// real unix socket.
#include <catch2/catch.hpp>

#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "test/support/ttrpc_socket_relay.h"
#include "test/unit/ttrpc_test_util.h"
#include "ttrpc/client.h"
#include "ttrpc/server.h"
#include "ttrpc/ttrpc.pb.h"
#include "ttrpc/wire.h"

namespace {

using Result = absl::StatusOr<std::string>;

struct RawServer {
  test::LoopThread lt;
  std::shared_ptr<ttrpc::Client> client;
  base::UniqueFd server_end;

  RawServer() {
    auto [a, b] = test::SocketPair();
    server_end = std::move(b);
    client = ttrpc::Client::Adopt(lt.loop(), std::move(a));
  }
  ~RawServer() {
    client->Close();
    lt.Sync([&] { client.reset(); });
  }

  std::future<Result> Call(std::string payload, ttrpc::CallOptions opts = {}) {
    auto p = std::make_shared<std::promise<Result>>();
    auto f = p->get_future();
    client->Call("svc", "M", std::move(payload), std::move(opts),
                 [p](Result r) { p->set_value(std::move(r)); });
    return f;
  }

  ttrpc::Request ReadRequest(uint32_t* stream) {
    auto f = test::ReadFrame(server_end.get());
    REQUIRE(f.has_value());
    *stream = f->header.stream_id;
    ttrpc::Request req;
    REQUIRE(req.ParseFromArray(f->payload().data(), static_cast<int>(f->payload().size())));
    return req;
  }
};

Result Get(std::future<Result>& f) {
  REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return f.get();
}

}  // namespace

TEST_CASE("client stream ids are odd and increase by two") {
  RawServer rs;
  auto a = rs.Call("a");
  auto b = rs.Call("b");
  uint32_t s1 = 0, s2 = 0;
  rs.ReadRequest(&s1);
  rs.ReadRequest(&s2);
  CHECK(s1 == 1);
  CHECK(s2 == 3);
  test::WriteAll(rs.server_end.get(), ttrpc::EncodeResponseFrame(3, std::string_view("B")));
  test::WriteAll(rs.server_end.get(), ttrpc::EncodeResponseFrame(1, std::string_view("A")));
  CHECK(*Get(b) == "B");
  CHECK(*Get(a) == "A");
}

TEST_CASE("a response for an unknown stream is ignored") {
  RawServer rs;
  auto f = rs.Call("x");
  uint32_t stream = 0;
  rs.ReadRequest(&stream);
  test::WriteAll(rs.server_end.get(), ttrpc::EncodeResponseFrame(999, std::string_view("stray")));
  test::WriteAll(rs.server_end.get(), ttrpc::EncodeResponseFrame(stream, std::string_view("ok")));
  CHECK(*Get(f) == "ok");
  CHECK(rs.client->unmatched_responses() == 1);
}

TEST_CASE("an error status becomes the call's absl::Status") {
  RawServer rs;
  auto f = rs.Call("x");
  uint32_t stream = 0;
  rs.ReadRequest(&stream);
  test::WriteAll(rs.server_end.get(),
                 ttrpc::EncodeResponseFrame(stream, absl::NotFoundError("container not created")));
  Result r = Get(f);
  CHECK(r.status().code() == absl::StatusCode::kNotFound);
  CHECK(r.status().message() == "container not created");
}

TEST_CASE("metadata and timeout travel in the request") {
  RawServer rs;
  ttrpc::CallOptions opts;
  opts.metadata = {{"Containerd-Namespace-TTRPC", "ns1"}};  // sent lower-cased, as Go's MD does
  opts.timeout = absl::Milliseconds(40);
  auto f = rs.Call("x", opts);
  uint32_t stream = 0;
  ttrpc::Request req = rs.ReadRequest(&stream);
  REQUIRE(req.metadata_size() == 1);
  CHECK(req.metadata(0).key() == "containerd-namespace-ttrpc");
  CHECK(req.metadata(0).value() == "ns1");
  CHECK(req.timeout_nano() == 40'000'000);
  // Nobody answers: the client's own deadline fails the call.
  CHECK(Get(f).status().code() == absl::StatusCode::kDeadlineExceeded);
}

TEST_CASE("an oversized request is refused before it reaches the wire") {
  RawServer rs;
  auto big = rs.Call(std::string(ttrpc::kMaxMessageSize, 'x'));
  Result r = Get(big);
  CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
  auto small = rs.Call("small");
  uint32_t stream = 0;
  ttrpc::Request req = rs.ReadRequest(&stream);
  CHECK(req.payload() == "small");  // the first bytes on the wire
}

TEST_CASE("pending calls fail with Unavailable when the server closes") {
  RawServer rs;
  auto f = rs.Call("x");
  uint32_t stream = 0;
  rs.ReadRequest(&stream);
  rs.server_end.Reset();
  CHECK(Get(f).status().code() == absl::StatusCode::kUnavailable);
  auto after = rs.Call("y");
  CHECK(Get(after).status().code() == absl::StatusCode::kUnavailable);
}

// The `delete` subcommand died of SIGPIPE when containerd 2.1.9 ran it while
// the server it called was leaving: a client must fail the call instead.
TEST_CASE("a write to a server that stopped reading fails the call, without SIGPIPE") {
  struct sigaction dfl {}, old {};
  dfl.sa_handler = SIG_DFL;
  REQUIRE(sigaction(SIGPIPE, &dfl, &old) == 0);
  RawServer rs;
  REQUIRE(shutdown(rs.server_end.get(), SHUT_RD) == 0);  // writes to it now get EPIPE
  auto f = rs.Call("x");
  Result r = Get(f);
  INFO(r.status());
  CHECK_FALSE(r.ok());
  CHECK(r.status().message().find("Broken pipe") != std::string_view::npos);
  sigaction(SIGPIPE, &old, nullptr);
}

TEST_CASE("an oversized response fails only its call") {
  RawServer rs;
  auto f = rs.Call("x");
  uint32_t stream = 0;
  rs.ReadRequest(&stream);
  std::string huge(ttrpc::kMaxMessageSize + 1, 'h');
  test::WriteAll(rs.server_end.get(),
                 ttrpc::EncodeFrame(stream, ttrpc::MessageType::kResponse, huge));
  CHECK(Get(f).status().code() == absl::StatusCode::kResourceExhausted);
  auto g = rs.Call("y");
  rs.ReadRequest(&stream);
  test::WriteAll(rs.server_end.get(), ttrpc::EncodeResponseFrame(stream, std::string_view("fine")));
  CHECK(*Get(g) == "fine");
}

TEST_CASE("our client and our server over a unix socket, many calls in flight") {
  char dir[] = "/tmp/ttrpc-test-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/s.sock";
  test::LoopThread lt;
  std::unique_ptr<ttrpc::Server> server;
  std::unique_ptr<test::SocketRelay> relay;
  lt.Sync([&] {
    server = std::make_unique<ttrpc::Server>(lt.loop(), ttrpc::ServerOptions{});
    server->Register("svc", "Echo", [](ttrpc::RequestContext, std::string p,
                                       ttrpc::Responder r) { r.Reply(p); });
    relay = std::make_unique<test::SocketRelay>(lt.loop(), *server);
    auto fd = base::ListenUnix(path);
    REQUIRE(fd.ok());
    REQUIRE(relay->Listen(std::move(*fd)).ok());
  });
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  std::vector<std::unique_ptr<ttrpc::BlockingClient>> clients;
  for (int i = 0; i < 4; ++i) {
    auto c = ttrpc::BlockingClient::Connect("unix://" + path);
    REQUIRE(c.ok());
    clients.push_back(std::move(*c));
  }
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::string msg = std::to_string(t * 1000 + i);
        auto r = clients[t % 4]->Call("svc", "Echo", msg);
        if (r.ok() && *r == msg) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == 1600);
  clients.clear();
  lt.Sync([&] {
    relay.reset();
    server.reset();
  });
  unlink(path.c_str());
  rmdir(dir);
}

TEST_CASE("each listener's tag reaches the handlers of its connections") {
  char dir[] = "/tmp/ttrpc-test-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string a = std::string(dir) + "/a.sock", b = std::string(dir) + "/b.sock";
  test::LoopThread lt;
  std::unique_ptr<ttrpc::Server> server;
  std::unique_ptr<test::SocketRelay> relay;
  lt.Sync([&] {
    server = std::make_unique<ttrpc::Server>(lt.loop(), ttrpc::ServerOptions{});
    server->Register("svc", "Label", [](ttrpc::RequestContext ctx, std::string,
                                        ttrpc::Responder r) { r.Reply(ctx.connection_tag); });
    relay = std::make_unique<test::SocketRelay>(lt.loop(), *server);
    REQUIRE(relay->Listen(std::move(*base::ListenUnix(a)), "ns-a").ok());
    REQUIRE(relay->Listen(std::move(*base::ListenUnix(b)), "ns-b").ok());
  });
  auto ca = ttrpc::BlockingClient::Connect(a);
  auto cb = ttrpc::BlockingClient::Connect(b);
  REQUIRE(ca.ok());
  REQUIRE(cb.ok());
  CHECK(*(*ca)->Call("svc", "Label", "") == "ns-a");
  CHECK(*(*cb)->Call("svc", "Label", "") == "ns-b");
  ca->reset();
  cb->reset();
  lt.Sync([&] {
    relay.reset();
    server.reset();
  });
  unlink(a.c_str());
  unlink(b.c_str());
  rmdir(dir);
}
