// JsonScanner: just enough JSON to read what an OCI runtime prints (an array
// of pids, flat log objects), without a JSON library. Not a validator: it
// accepts what it can make sense of and says false otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shim::oci {

class JsonScanner {
 public:
  explicit JsonScanner(std::string_view text) : text_(text) {}

  void SkipSpace();
  bool AtEnd();  // only whitespace left
  // Consumes `c` (after whitespace) if it is next.
  bool Consume(char c);
  // Consumes the bare word `word` (true, false, null) if it is next.
  bool ConsumeWord(std::string_view word);
  // A string, decoded (escapes, \u with surrogate pairs, as UTF-8). `out`
  // may be null to skip it.
  bool ReadString(std::string* out);
  // An integer without fraction or exponent.
  bool ReadInt(int64_t* out);
  // Any value, nested ones included.
  bool SkipValue();

 private:
  bool SkipValueAt(int depth);
  bool ReadHex4(uint32_t* out);

  std::string_view text_;
  size_t pos_ = 0;
};

// The string-valued members of one flat JSON object ({"level":"error",...}),
// in order; members of other types are skipped. nullopt if `object` is not an
// object.
std::optional<std::vector<std::pair<std::string, std::string>>> JsonStringMembers(
    std::string_view object);

}  // namespace shim::oci
