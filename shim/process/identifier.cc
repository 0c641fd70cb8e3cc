#include "shim/process/identifier.h"

namespace shim {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

bool IsValidIdentifier(const std::string& s) {
  if (s.empty() || s.size() > 76) return false;
  bool need_alnum = true;  // at the start and after each separator
  for (char c : s) {
    if (IsAlnum(c)) {
      need_alnum = false;
    } else if (c == '.' || c == '_' || c == '-') {
      if (need_alnum) return false;
      need_alnum = true;
    } else {
      return false;
    }
  }
  return !need_alnum;
}

}  // namespace shim
