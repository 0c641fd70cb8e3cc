#include "shim/oci/stdio_uri.h"

#include <cctype>
#include <optional>

#include "fmt/format.h"

namespace shim::oci {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; in a query '+' is a space too. nullopt for a bad escape.
std::optional<std::string> Unescape(std::string_view s, bool query) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (query && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<StdioUri> ParseStdioUri(std::string_view uri) {
  auto bad = [uri](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format("'{}': {}", uri, why));
  };
  StdioUri out;
  if (!uri.empty() && uri.front() == '/') {
    out.path = std::string(uri);  // a plain path is taken as it is, as runc-v2 opens it
    return out;
  }
  const size_t scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0)
    return bad("want an absolute path or a URI");
  for (char c : uri.substr(0, scheme_end)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      return bad("bad scheme");
    out.scheme.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  std::string_view rest = uri.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('#'));
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  const size_t path_start = rest.find('/');  // the host before it is ignored
  auto path = Unescape(path_start == std::string_view::npos ? "" : rest.substr(path_start), false);
  if (!path) return bad("bad %-escape in the path");
  out.path = std::move(*path);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    auto key = Unescape(pair.substr(0, eq), true);
    auto value = Unescape(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
    if (!key || !value) return bad("bad %-escape in the query");
    out.query.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
}

}  // namespace shim::oci
