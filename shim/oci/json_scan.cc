#include "shim/oci/json_scan.h"

#include <charconv>

namespace shim::oci {
namespace {

// Deeper nesting than this is not something a runtime prints; refusing it
// keeps the recursion bounded on hostile input.
constexpr int kMaxDepth = 32;

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsDelimiter(char c) {
  return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

}  // namespace

void JsonScanner::SkipSpace() {
  while (pos_ < text_.size() &&
         (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\r' || text_[pos_] == '\n')) {
    ++pos_;
  }
}

bool JsonScanner::AtEnd() {
  SkipSpace();
  return pos_ == text_.size();
}

bool JsonScanner::Consume(char c) {
  SkipSpace();
  if (pos_ < text_.size() && text_[pos_] == c) {
    ++pos_;
    return true;
  }
  return false;
}

bool JsonScanner::ConsumeWord(std::string_view word) {
  SkipSpace();
  if (text_.substr(pos_, word.size()) != word) return false;
  size_t end = pos_ + word.size();
  if (end < text_.size() && !IsDelimiter(text_[end])) return false;
  pos_ = end;
  return true;
}

bool JsonScanner::ReadHex4(uint32_t* out) {
  if (pos_ + 4 > text_.size()) return false;
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, v, 16);
  if (ec != std::errc() || end != text_.data() + pos_ + 4) return false;
  pos_ += 4;
  *out = v;
  return true;
}

bool JsonScanner::ReadString(std::string* out) {
  if (!Consume('"')) return false;
  std::string value;
  while (pos_ < text_.size()) {
    char c = text_[pos_++];
    if (c == '"') {
      if (out != nullptr) *out = std::move(value);
      return true;
    }
    if (c != '\\') {
      value.push_back(c);
      continue;
    }
    if (pos_ >= text_.size()) return false;
    char esc = text_[pos_++];
    switch (esc) {
      case '"': value.push_back('"'); break;
      case '\\': value.push_back('\\'); break;
      case '/': value.push_back('/'); break;
      case 'b': value.push_back('\b'); break;
      case 'f': value.push_back('\f'); break;
      case 'n': value.push_back('\n'); break;
      case 'r': value.push_back('\r'); break;
      case 't': value.push_back('\t'); break;
      case 'u': {
        uint32_t cp = 0;
        if (!ReadHex4(&cp)) return false;
        // A high surrogate followed by \uDC00..\uDFFF is one code point.
        if (cp >= 0xD800 && cp < 0xDC00 && text_.substr(pos_, 2) == "\\u") {
          size_t saved = pos_;
          pos_ += 2;
          uint32_t low = 0;
          if (ReadHex4(&low) && low >= 0xDC00 && low < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else {
            pos_ = saved;
          }
        }
        // A lone surrogate is not valid UTF-8: U+FFFD instead.
        if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
        AppendUtf8(cp, &value);
        break;
      }
      default: return false;
    }
  }
  return false;  // unterminated
}

bool JsonScanner::ReadInt(int64_t* out) {
  SkipSpace();
  const char* begin = text_.data() + pos_;
  const char* end = text_.data() + text_.size();
  int64_t v = 0;
  auto [next, ec] = std::from_chars(begin, end, v);
  if (ec != std::errc() || next == begin) return false;
  if (next != end && !IsDelimiter(*next)) return false;  // 1.5, 1e3, 12abc
  pos_ += static_cast<size_t>(next - begin);
  *out = v;
  return true;
}

bool JsonScanner::SkipValue() { return SkipValueAt(0); }

bool JsonScanner::SkipValueAt(int depth) {
  if (depth > kMaxDepth) return false;
  SkipSpace();
  if (pos_ >= text_.size()) return false;
  char c = text_[pos_];
  if (c == '"') return ReadString(nullptr);
  if (c == '{' || c == '[') {
    const char close = c == '{' ? '}' : ']';
    ++pos_;
    if (Consume(close)) return true;
    do {
      if (close == '}' && (!ReadString(nullptr) || !Consume(':'))) return false;
      if (!SkipValueAt(depth + 1)) return false;
    } while (Consume(','));
    return Consume(close);
  }
  // true, false, null or a number: up to the next delimiter.
  size_t start = pos_;
  while (pos_ < text_.size() && !IsDelimiter(text_[pos_])) ++pos_;
  return pos_ > start;
}

std::optional<std::vector<std::pair<std::string, std::string>>> JsonStringMembers(
    std::string_view object) {
  JsonScanner scan(object);
  if (!scan.Consume('{')) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> members;
  if (scan.Consume('}')) return members;
  do {
    std::string key;
    if (!scan.ReadString(&key) || !scan.Consume(':')) return std::nullopt;
    std::string value;
    // Peek for a string without consuming anything else.
    JsonScanner probe = scan;
    if (probe.ReadString(&value)) {
      scan = probe;
      members.emplace_back(std::move(key), std::move(value));
    } else if (!scan.SkipValue()) {
      return std::nullopt;
    }
  } while (scan.Consume(','));
  if (!scan.Consume('}')) return std::nullopt;
  return members;
}

}  // namespace shim::oci
