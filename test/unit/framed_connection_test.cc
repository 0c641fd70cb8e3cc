// FramedConnection: whole frames in and out of a real socket, the size
// limit, the close, and a handover of half-read and unsent bytes.
#include <catch2/catch.hpp>

#include <future>

#include "test/unit/ttrpc_test_util.h"
#include "ttrpc/framed_connection.h"

namespace {

using ttrpc::EncodeFrame;
using ttrpc::MessageType;

struct Got {
  std::promise<std::vector<ttrpc::Frame>> frames;
  std::promise<void> closed;
  std::vector<ttrpc::Frame> so_far;
  size_t want = 0;
};

ttrpc::FramedConnection::Handlers Collect(Got& got) {
  return {[&got](ttrpc::Frame f) {
            got.so_far.push_back(std::move(f));
            if (got.so_far.size() == got.want) got.frames.set_value(got.so_far);
          },
          [&got] { got.closed.set_value(); }};
}

TEST_CASE("frames arrive whole, with their header bytes; an oversized one as a header") {
  test::LoopThread lt;
  auto [a, b] = test::SocketPair();
  Got got;
  got.want = 3;
  std::unique_ptr<ttrpc::FramedConnection> conn;
  lt.Sync([&, fd = b.Release()] {
    auto c = ttrpc::FramedConnection::Create(lt.loop(), base::UniqueFd(fd), 8, Collect(got));
    REQUIRE(c.ok());
    conn = std::move(*c);
  });
  std::string one = EncodeFrame(1, MessageType::kRequest, "12345678");
  test::WriteAll(a.get(), one + EncodeFrame(3, MessageType::kRequest, "123456789") +
                              EncodeFrame(5, MessageType::kRequest, ""));
  auto frames = got.frames.get_future().get();
  CHECK(frames[0].bytes == one);
  CHECK(frames[1].oversized);
  CHECK(frames[1].bytes.size() == ttrpc::kHeaderSize);
  CHECK(frames[2].header.stream_id == 5);

  lt.Sync([&] { conn->Send(EncodeFrame(2, MessageType::kResponse, "back")); });
  auto f = test::ReadFrame(a.get());
  REQUIRE(f.has_value());
  CHECK(f->payload() == "back");

  a.Reset();
  got.closed.get_future().get();
  lt.Sync([&] { conn.reset(); });
}

TEST_CASE("a handover continues unsent bytes and a half-read frame") {
  test::LoopThread lt;
  auto [a, b] = test::SocketPair();
  Got got;
  got.want = 1;
  std::string in = EncodeFrame(7, MessageType::kRequest, "handed over");
  std::string out = EncodeFrame(8, MessageType::kResponse, "pending");
  std::unique_ptr<ttrpc::FramedConnection> conn;
  lt.Sync([&, fd = b.Release()] {
    auto c = ttrpc::FramedConnection::Create(lt.loop(), base::UniqueFd(fd),
                                             ttrpc::kMaxMessageSize, Collect(got), out,
                                             std::string_view(in).substr(0, 13));
    REQUIRE(c.ok());
    conn = std::move(*c);
  });
  auto f = test::ReadFrame(a.get());
  REQUIRE(f.has_value());
  CHECK(f->payload() == "pending");
  test::WriteAll(a.get(), std::string_view(in).substr(13));
  CHECK(got.frames.get_future().get()[0].bytes == in);

  // CloseAfterFlush reports the close once the queue is written.
  lt.Sync([&] {
    conn->Send(EncodeFrame(10, MessageType::kResponse, "last"));
    conn->CloseAfterFlush();
  });
  got.closed.get_future().get();
  auto last = test::ReadFrame(a.get());
  REQUIRE(last.has_value());
  CHECK(last->payload() == "last");
  CHECK(test::WaitEof(a.get()));
  lt.Sync([&] { conn.reset(); });
}

}  // namespace
