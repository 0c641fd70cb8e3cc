#include "keeper/upgrade_state.h"

#include <charconv>
#include <optional>
#include <set>

#include "fmt/format.h"

namespace keeper {
namespace {

constexpr std::string_view kHeader = "embedshim-keeper-state";

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  if (bytes.empty()) return "-";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// A text travels as one word: no spaces or control characters, and not
// "-", which stands for empty.
bool IsWord(std::string_view s) {
  if (s == "-") return false;
  for (unsigned char c : s)
    if (c <= ' ' || c == 0x7f) return false;
  return true;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// One line, read word by word; each read says whether it worked.
class Line {
 public:
  // A space at the end would hide a missing word.
  explicit Line(std::string_view text) : rest_(text), bad_(text.ends_with(' ')) {}

  std::optional<std::string_view> Next() {
    if (bad_ || rest_.empty()) return std::nullopt;
    size_t end = std::min(rest_.find(' '), rest_.size());
    std::string_view word = rest_.substr(0, end);
    rest_.remove_prefix(std::min(end + 1, rest_.size()));
    if (word.empty()) return std::nullopt;  // two spaces, or one at the end
    return word;
  }
  template <class T>
  bool Number(T& out) {
    std::optional<std::string_view> w = Next();
    if (!w || (*w)[0] == '+') return false;
    auto [end, ec] = std::from_chars(w->data(), w->data() + w->size(), out);
    return ec == std::errc() && end == w->data() + w->size();
  }
  // An fd number above stdio, or -1 where `absent_ok`.
  bool Fd(int& out, bool absent_ok = false) {
    if (!Number(out)) return false;
    return out > 2 || (absent_ok && out == -1);
  }
  bool Text(std::string& out) {
    std::optional<std::string_view> w = Next();
    // Only what EncodeUpgradeState writes: what decodes encodes again.
    if (!w || (*w != "-" && !IsWord(*w))) return false;
    out = *w == "-" ? "" : std::string(*w);
    return true;
  }
  bool Bytes(std::string& out) {
    std::optional<std::string_view> w = Next();
    out.clear();
    if (!w) return false;
    if (*w == "-") return true;
    if (w->size() % 2 != 0) return false;
    out.reserve(w->size() / 2);
    for (size_t i = 0; i < w->size(); i += 2) {
      int hi = HexDigit((*w)[i]), lo = HexDigit((*w)[i + 1]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi << 4 | lo));
    }
    return true;
  }
  bool AtEnd() const { return rest_.empty(); }

 private:
  std::string_view rest_;
  bool bad_;
};

absl::Status LineError(size_t number, std::string_view what) {
  return absl::DataLossError(fmt::format("line {}: {}", number, what));
}

absl::Status Malformed(size_t number, std::string_view kind) {
  return LineError(number, fmt::format("a malformed '{}' line (a bad number, hex or fd, or a "
                                       "missing or extra word)",
                                       kind));
}

// Reads one item line into `state`. `kind` is its first word.
absl::Status DecodeLine(std::string_view kind, Line& f, size_t number, UpgradeState& state) {
  if (kind == "listener") {
    UpgradeState::Listener l;
    if (!(f.Fd(l.fd) && f.Text(l.label) && f.Text(l.path) && f.AtEnd()))
      return Malformed(number, kind);
    state.listeners.push_back(std::move(l));
  } else if (kind == "conn") {
    UpgradeState::Conn c;
    if (!(f.Fd(c.fd) && f.Number(c.id) && f.Number(c.peer_uid) && f.Number(c.peer_pid) &&
          f.Text(c.label) && f.Bytes(c.out) && f.Bytes(c.partial) && f.AtEnd()))
      return Malformed(number, kind);
    state.conns.push_back(std::move(c));
  } else if (kind == "pending") {
    UpgradeState::Pending p;
    if (!(f.Number(p.seq) && f.Number(p.conn) && f.Number(p.stream) && f.Bytes(p.frame) &&
          f.AtEnd()))
      return Malformed(number, kind);
    state.pending.push_back(std::move(p));
  } else if (kind == "kept") {
    UpgradeState::Kept k;
    if (!(f.Fd(k.fd) && f.Text(k.name) && f.AtEnd())) return Malformed(number, kind);
    state.kept.push_back(std::move(k));
  } else if (kind == "tty") {
    TtyRelay::Saved t;
    int close_input = -1;
    if (!(f.Bytes(t.name) && f.Fd(t.master, true) && f.Fd(t.in, true) && f.Fd(t.out, true) &&
          f.Number(close_input) && (close_input == 0 || close_input == 1) &&
          f.Bytes(t.to_out) && f.Bytes(t.to_master) && f.AtEnd()))
      return Malformed(number, kind);
    t.close_input = close_input == 1;
    state.ttys.push_back(std::move(t));
  } else {
    return LineError(number, fmt::format("an unknown line '{}'", kind.substr(0, 32)));
  }
  return absl::OkStatus();
}

// What no single line shows: an fd owned twice would be closed twice, an id
// or seq the counters hand out again would overwrite a connection or a
// request.
absl::Status CheckConsistent(const UpgradeState& state) {
  std::set<int> fds;
  for (int fd : FdsOf(state))
    if (!fds.insert(fd).second) return absl::DataLossError(fmt::format("fd {} is named twice", fd));
  std::set<uint64_t> conns;
  for (const auto& c : state.conns) {
    if (c.id == 0 || c.id >= state.next_conn)
      return absl::DataLossError(
          fmt::format("connection id {} is not below the next id {}", c.id, state.next_conn));
    if (!conns.insert(c.id).second)
      return absl::DataLossError(fmt::format("connection {} is named twice", c.id));
  }
  std::set<uint64_t> seqs;
  std::set<std::pair<uint64_t, uint32_t>> streams;
  for (const auto& p : state.pending) {
    if (p.seq == 0 || p.seq >= state.next_seq)
      return absl::DataLossError(
          fmt::format("request seq {} is not below the next seq {}", p.seq, state.next_seq));
    if (!seqs.insert(p.seq).second)
      return absl::DataLossError(fmt::format("request seq {} is named twice", p.seq));
    if (!streams.insert({p.conn, p.stream}).second)
      return absl::DataLossError(
          fmt::format("two requests of connection {} on stream {}", p.conn, p.stream));
  }
  std::set<std::string> names;
  for (const auto& k : state.kept)
    if (!names.insert(k.name).second)
      return absl::DataLossError(fmt::format("kept fd {:?} is named twice", k.name));
  names.clear();
  for (const auto& t : state.ttys)
    if (!names.insert(t.name).second)
      return absl::DataLossError(fmt::format("terminal {:?} is named twice", t.name));
  return absl::OkStatus();
}

}  // namespace

std::vector<int> FdsOf(const UpgradeState& state) {
  std::vector<int> out;
  for (const auto& l : state.listeners) out.push_back(l.fd);
  for (const auto& c : state.conns) out.push_back(c.fd);
  for (const auto& k : state.kept) out.push_back(k.fd);
  for (const auto& t : state.ttys)
    for (int fd : {t.master, t.in, t.out})
      if (fd >= 0) out.push_back(fd);
  return out;
}

absl::StatusOr<std::string> EncodeUpgradeState(const UpgradeState& state) {
  auto word = [](std::string_view what, const std::string& s) -> absl::StatusOr<std::string> {
    if (s.empty()) return std::string("-");
    if (!IsWord(s))
      return absl::InvalidArgumentError(fmt::format("{} {:?} cannot be written as one word", what, s));
    return s;
  };
  std::string out = fmt::format("{} {}\nnext {} {}\n", kHeader, kUpgradeStateVersion,
                                state.next_conn, state.next_seq);
  size_t lines = 1;
  for (const auto& l : state.listeners) {
    absl::StatusOr<std::string> label = word("listener label", l.label);
    if (!label.ok()) return label.status();
    absl::StatusOr<std::string> path = word("listener path", l.path);
    if (!path.ok()) return path.status();
    out += fmt::format("listener {} {} {}\n", l.fd, *label, *path);
    ++lines;
  }
  for (const auto& c : state.conns) {
    absl::StatusOr<std::string> label = word("connection label", c.label);
    if (!label.ok()) return label.status();
    out += fmt::format("conn {} {} {} {} {} {} {}\n", c.fd, c.id, c.peer_uid, c.peer_pid, *label,
                       Hex(c.out), Hex(c.partial));
    ++lines;
  }
  for (const auto& p : state.pending) {
    out += fmt::format("pending {} {} {} {}\n", p.seq, p.conn, p.stream, Hex(p.frame));
    ++lines;
  }
  for (const auto& k : state.kept) {
    absl::StatusOr<std::string> name = word("kept fd name", k.name);
    if (!name.ok()) return name.status();
    out += fmt::format("kept {} {}\n", k.fd, *name);
    ++lines;
  }
  for (const auto& t : state.ttys) {
    out += fmt::format("tty {} {} {} {} {} {} {}\n", Hex(t.name), t.master, t.in, t.out,
                       t.close_input ? 1 : 0, Hex(t.to_out), Hex(t.to_master));
    ++lines;
  }
  out += fmt::format("end {}\n", lines);
  return out;
}

absl::StatusOr<UpgradeState> DecodeUpgradeState(std::string_view text) {
  UpgradeState state;
  int version = 0;
  bool saw_next = false;
  bool saw_end = false;
  size_t items = 0;  // lines after the header, before "end"
  size_t number = 0;
  while (!text.empty()) {
    ++number;
    size_t newline = text.find('\n');
    if (newline == std::string_view::npos)
      return LineError(number, "no newline at its end: the state is truncated");
    std::string_view text_line = text.substr(0, newline);
    text.remove_prefix(newline + 1);
    if (saw_end) return LineError(number, "something after the end");
    Line f(text_line);
    std::optional<std::string_view> kind = f.Next();
    if (!kind) return LineError(number, "an empty or badly spaced line");
    if (number == 1 && *kind == kHeader) {
      if (!(f.Number(version) && f.AtEnd()))
        return LineError(number, "a malformed version header");
      if (version != kUpgradeStateVersion)
        return LineError(number, fmt::format("version {}, this keeper reads 0 to {}", version,
                                             kUpgradeStateVersion));
      continue;
    }
    if (!saw_next) {
      // The counters come first, in every version.
      if (*kind != "next" || !(f.Number(state.next_conn) && f.Number(state.next_seq) && f.AtEnd()))
        return LineError(number, "expected a well-formed 'next' line");
      saw_next = true;
      ++items;
      continue;
    }
    if (*kind == "end" && version >= 1) {
      size_t counted = 0;
      if (!(f.Number(counted) && f.AtEnd())) return Malformed(number, *kind);
      if (counted != items)
        return LineError(number, fmt::format("the end counts {} lines, the state has {}: some "
                                             "were lost",
                                             counted, items));
      saw_end = true;
      continue;
    }
    if (absl::Status st = DecodeLine(*kind, f, number, state); !st.ok()) return st;
    ++items;
  }
  if (!saw_next) return absl::DataLossError("an empty state");
  if (version >= 1 && !saw_end) return absl::DataLossError("no 'end' line: the state is truncated");
  if (absl::Status st = CheckConsistent(state); !st.ok()) return st;
  return state;
}

}  // namespace keeper
