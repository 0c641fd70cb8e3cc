// The keeper's upgrade state (keeper/upgrade_state.*): what one keeper
// writes the next reads back, and every way a state can be wrong is a
// DataLoss naming it, never a crash or a half-read state.
#include "keeper/upgrade_state.h"

#include <catch2/catch.hpp>

#include <string>

namespace {

keeper::UpgradeState Sample() {
  keeper::UpgradeState s;
  s.next_conn = 9;
  s.next_seq = 40;
  s.listeners = {{10, "", "/run/containerd-embed/x/shim.sock"},
                 {11, "default", "/run/containerd-embed/x/ns-1.sock"}};
  s.conns = {{12, 3, 0, 4242, "default", std::string("out\0put", 7), "\x01\x02"},
             {13, 8, 1000, 7, "", "", ""}};
  s.pending = {{39, 3, 5, std::string("frame\n bytes", 12)}, {12, 8, 1, ""}};
  s.kept = {{14, "stdin/default/c1"}};
  keeper::TtyRelay::Saved t;
  t.name = "tty/default/c1/";
  t.master = 15;
  t.in = -1;
  t.out = 16;
  t.close_input = true;
  t.to_out = "hello";
  t.to_master = std::string(1, '\x04');
  s.ttys = {t};
  return s;
}

std::string Encoded(const keeper::UpgradeState& s) {
  absl::StatusOr<std::string> text = keeper::EncodeUpgradeState(s);
  REQUIRE(text.ok());
  return *text;
}

// The decoder's complaint about `text`, "" if it decodes.
std::string Complaint(const std::string& text) {
  absl::StatusOr<keeper::UpgradeState> s = keeper::DecodeUpgradeState(text);
  if (s.ok()) return "";
  CHECK(s.status().code() == absl::StatusCode::kDataLoss);
  return std::string(s.status().message());
}

}  // namespace

TEST_CASE("upgrade state: what one keeper writes the next reads back", "[unit][upgrade]") {
  keeper::UpgradeState in = Sample();
  std::string text = Encoded(in);
  CHECK(text.starts_with("embedshim-keeper-state 1\nnext 9 40\n"));
  CHECK(text.ends_with("end 9\n"));
  absl::StatusOr<keeper::UpgradeState> out = keeper::DecodeUpgradeState(text);
  REQUIRE(out.ok());
  CHECK(out->next_conn == 9);
  CHECK(out->next_seq == 40);
  REQUIRE(out->listeners.size() == 2);
  CHECK(out->listeners[0].label.empty());
  CHECK(out->listeners[1].path == in.listeners[1].path);
  REQUIRE(out->conns.size() == 2);
  CHECK(out->conns[0].out == in.conns[0].out);
  CHECK(out->conns[0].partial == in.conns[0].partial);
  CHECK(out->conns[0].peer_pid == 4242);
  CHECK(out->conns[1].peer_uid == 1000);
  REQUIRE(out->pending.size() == 2);
  CHECK(out->pending[0].frame == in.pending[0].frame);
  CHECK(out->pending[1].frame.empty());
  REQUIRE(out->kept.size() == 1);
  CHECK(out->kept[0].name == "stdin/default/c1");
  REQUIRE(out->ttys.size() == 1);
  CHECK(out->ttys[0].name == "tty/default/c1/");
  CHECK(out->ttys[0].in == -1);
  CHECK(out->ttys[0].close_input);
  CHECK(out->ttys[0].to_master == "\x04");
  CHECK(keeper::FdsOf(*out) == std::vector<int>{10, 11, 12, 13, 14, 15, 16});
  CHECK(Encoded(*out) == text);
}

TEST_CASE("upgrade state: version 0 (no header, no end) still reads", "[unit][upgrade]") {
  // What keepers before versioning wrote: an upgrade from one must work.
  absl::StatusOr<keeper::UpgradeState> s = keeper::DecodeUpgradeState(
      "next 3 5\nlistener 10 - /run/x/shim.sock\nconn 11 2 0 99 - - -\npending 4 2 3 0a0b\n"
      "kept 12 stdin/ns/c\ntty 6162 13 -1 -1 0 - -\n");
  REQUIRE(s.ok());
  CHECK(s->conns.size() == 1);
  CHECK(s->pending[0].frame == "\x0a\x0b");
  CHECK(s->ttys[0].name == "ab");
}

TEST_CASE("upgrade state: every fault is named", "[unit][upgrade]") {
  const std::string head = "embedshim-keeper-state 1\nnext 9 40\n";
  auto [text, complaint] = GENERATE_REF(table<std::string, std::string>({
      {"", "an empty state"},
      {"embedshim-keeper-state 2\nnext 1 1\nend 1\n", "line 1: version 2, this keeper reads 0 to 1"},
      {"embedshim-keeper-state one\n", "line 1: a malformed version header"},
      {"embedshim-keeper-state 1\n", "an empty state"},
      {"embedshim-keeper-state 1\nlistener 10 - -\n", "line 2: expected a well-formed 'next'"},
      // Truncated: mid-line, at a line's end, before the end line.
      {head + "kept 14 na", "line 3: no newline at its end: the state is truncated"},
      {head, "no 'end' line: the state is truncated"},
      {head + "kept 14 a\nend 1\n", "line 4: the end counts 1 lines, the state has 2"},
      {head + "end 1\ngarbage\n", "line 4: something after the end"},
      {head + "end 1\n\n", "line 4: something after the end"},
      // Bad numbers, hex, fds and words.
      {"embedshim-keeper-state 1\nnext -1 1\nend 1\n", "line 2: expected a well-formed 'next'"},
      {"embedshim-keeper-state 1\nnext 99999999999999999999 1\nend 1\n",
       "line 2: expected a well-formed 'next'"},
      {head + "kept +14 a\nend 2\n", "line 3: a malformed 'kept' line"},
      {head + "kept 2 a\nend 2\n", "line 3: a malformed 'kept' line"},
      {head + "kept 14\nend 2\n", "line 3: a malformed 'kept' line"},
      {head + "kept 14 a b\nend 2\n", "line 3: a malformed 'kept' line"},
      {head + "kept  14 a\nend 2\n", "line 3: a malformed 'kept' line"},
      {head + "kept 14 a \nend 2\n", "line 3: an empty or badly spaced line"},
      {head + "pending 1 1 1 0g\nend 2\n", "line 3: a malformed 'pending' line"},
      {head + "pending 1 1 1 abc\nend 2\n", "line 3: a malformed 'pending' line"},
      {head + "pending 1 1 1 AB\nend 2\n", "line 3: a malformed 'pending' line"},
      {head + "pending 1 1 4294967296 -\nend 2\n", "line 3: a malformed 'pending' line"},
      {head + "tty 61 -2 -1 -1 0 - -\nend 2\n", "line 3: a malformed 'tty' line"},
      {head + "tty 61 -1 -1 -1 1\nend 2\n", "line 3: a malformed 'tty' line"},
      {head + "conn 12 3 0 1 - - - -\nend 2\n", "line 3: a malformed 'conn' line"},
      {head + "frob 1\nend 2\n", "line 3: an unknown line 'frob'"},
      // Consistent lines, an inconsistent whole.
      {head + "kept 14 a\nkept 14 b\nend 3\n", "fd 14 is named twice"},
      {head + "kept 14 a\ntty 61 -1 14 -1 0 - -\nend 3\n", "fd 14 is named twice"},
      {head + "kept 14 a\nkept 15 a\nend 3\n", "kept fd \"a\" is named twice"},
      {head + "conn 12 9 0 1 - - -\nend 2\n", "connection id 9 is not below the next id 9"},
      {head + "conn 12 0 0 1 - - -\nend 2\n", "connection id 0 is not below"},
      {head + "conn 12 3 0 1 - - -\nconn 13 3 0 1 - - -\nend 3\n", "connection 3 is named twice"},
      {head + "pending 40 1 1 -\nend 2\n", "request seq 40 is not below the next seq 40"},
      {head + "pending 3 1 1 -\npending 3 1 2 -\nend 3\n", "request seq 3 is named twice"},
      {head + "pending 3 1 1 -\npending 4 1 1 -\nend 3\n", "two requests of connection 1 on stream 1"},
      {head + "tty 61 -1 -1 -1 0 - -\ntty 61 -1 -1 -1 0 - -\nend 3\n", "terminal \"a\" is named twice"},
  }));
  INFO(text);
  std::string got = Complaint(text);
  INFO(got);
  CHECK(got.starts_with(complaint));
}

TEST_CASE("upgrade state: a text that is not one word is not written", "[unit][upgrade]") {
  for (const std::string& bad :
       std::vector<std::string>{"two words", "new\nline", "-", std::string("nul\0", 4)}) {
    keeper::UpgradeState s;
    s.next_conn = 2;
    s.kept = {{14, bad}};
    absl::StatusOr<std::string> text = keeper::EncodeUpgradeState(s);
    CHECK(text.status().code() == absl::StatusCode::kInvalidArgument);
  }
}
