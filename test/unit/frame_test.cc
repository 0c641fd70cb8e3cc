// Frame codec: the byte-level contract with containerd's Go ttrpc.
#include <catch2/catch.hpp>

#include "ttrpc/frame.h"

using ttrpc::EncodeFrame;
using ttrpc::FrameDecoder;
using ttrpc::kHeaderSize;
using ttrpc::kMaxMessageSize;
using ttrpc::MessageType;

TEST_CASE("header is big-endian length, stream id, type, flags") {
  std::string f = EncodeFrame(0x01020304, MessageType::kResponse, "abc", 0x05);
  REQUIRE(f.size() == kHeaderSize + 3);
  const unsigned char want[] = {0, 0, 0, 3, 1, 2, 3, 4, 2, 5, 'a', 'b', 'c'};
  REQUIRE(std::string(reinterpret_cast<const char*>(want), sizeof want) == f);
}

TEST_CASE("a header split across reads still yields the frame") {
  std::string f = EncodeFrame(7, MessageType::kRequest, "payload");
  FrameDecoder d;
  for (char c : f) {
    REQUIRE_FALSE(d.Next().has_value());
    d.Feed(std::string_view(&c, 1));
  }
  auto frame = d.Next();
  REQUIRE(frame.has_value());
  CHECK(frame->header.stream_id == 7);
  CHECK(frame->payload() == "payload");
  CHECK_FALSE(d.Partial());
}

TEST_CASE("two frames in one read come out in order") {
  std::string both = EncodeFrame(1, MessageType::kRequest, "one") +
                     EncodeFrame(3, MessageType::kRequest, "two");
  FrameDecoder d;
  d.Feed(both);
  auto a = d.Next();
  auto b = d.Next();
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->payload() == "one");
  CHECK(b->payload() == "two");
  CHECK(b->header.stream_id == 3);
  CHECK_FALSE(d.Next().has_value());
}

TEST_CASE("a zero-length payload is a complete frame at once") {
  FrameDecoder d;
  d.Feed(EncodeFrame(9, MessageType::kResponse, ""));
  auto f = d.Next();
  REQUIRE(f.has_value());
  CHECK(f->payload().empty());
  CHECK(f->header.length == 0);
  CHECK_FALSE(d.Partial());
}

TEST_CASE("exactly the maximum size is accepted, one byte more is not") {
  std::string max(kMaxMessageSize, 'x');
  FrameDecoder d;
  d.Feed(EncodeFrame(1, MessageType::kRequest, max));
  auto ok = d.Next();
  REQUIRE(ok.has_value());
  CHECK_FALSE(ok->oversized);
  CHECK(ok->payload().size() == kMaxMessageSize);

  std::string over(kMaxMessageSize + 1, 'y');
  d.Feed(EncodeFrame(3, MessageType::kRequest, over));
  auto big = d.Next();
  REQUIRE(big.has_value());
  CHECK(big->oversized);
  CHECK(big->header.length == kMaxMessageSize + 1);
  CHECK(big->payload().empty());

  // The oversized payload is skipped, so the stream stays in sync.
  d.Feed(EncodeFrame(5, MessageType::kRequest, "next"));
  auto next = d.Next();
  REQUIRE(next.has_value());
  CHECK(next->header.stream_id == 5);
  CHECK(next->payload() == "next");
}

TEST_CASE("an oversized frame is reported as soon as its header arrives") {
  FrameDecoder d(16);
  std::string f = EncodeFrame(1, MessageType::kRequest, std::string(17, 'z'));
  d.Feed(std::string_view(f).substr(0, kHeaderSize));
  auto big = d.Next();
  REQUIRE(big.has_value());
  CHECK(big->oversized);
  CHECK(d.Partial());
  d.Feed(std::string_view(f).substr(kHeaderSize));
  CHECK_FALSE(d.Partial());
}

TEST_CASE("a decoder's buffered bytes continue in a fresh decoder") {
  std::string f = EncodeFrame(11, MessageType::kRequest, "handed over");
  for (size_t cut : {size_t{3}, kHeaderSize, kHeaderSize + 4}) {
    FrameDecoder first;
    first.Feed(std::string_view(f).substr(0, cut));
    REQUIRE_FALSE(first.Next().has_value());
    FrameDecoder second;
    second.Feed(first.Buffered());
    second.Feed(std::string_view(f).substr(cut));
    auto frame = second.Next();
    REQUIRE(frame.has_value());
    CHECK(frame->header.stream_id == 11);
    CHECK(frame->payload() == "handed over");
  }
}
