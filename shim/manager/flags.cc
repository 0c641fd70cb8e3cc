#include "shim/manager/flags.h"

#include <string_view>

#include "fmt/format.h"

namespace shim {

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args) {
  Flags f;
  struct StringFlag {
    std::string_view name;
    std::string* value;
  };
  const StringFlag string_flags[] = {
      {"namespace", &f.namespace_}, {"address", &f.address},
      {"publish-binary", &f.publish_binary}, {"id", &f.id}, {"bundle", &f.bundle},
  };
  struct BoolFlag {
    std::string_view name;
    bool* value;
  };
  const BoolFlag bool_flags[] = {
      {"debug", &f.debug}, {"json", &f.json}, {"help", &f.help}, {"h", &f.help},
      {"version", &f.version}, {"v", &f.version}, {"info", &f.info},
  };

  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg.size() < 2 || arg[0] != '-') {
      if (!f.action.empty())
        return absl::InvalidArgumentError(
            fmt::format("unexpected argument {:?} after action {:?}", arg, f.action));
      f.action = std::string(arg);
      continue;
    }
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);  // Go accepts -name and --name
    std::string_view name = arg, value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    bool matched = false;
    for (const auto& sf : string_flags) {
      if (name != sf.name) continue;
      if (!has_value) {
        if (i + 1 >= args.size())
          return absl::InvalidArgumentError(fmt::format("flag -{} needs a value", name));
        value = args[++i];
      }
      *sf.value = std::string(value);
      matched = true;
    }
    for (const auto& bf : bool_flags) {
      if (name != bf.name) continue;
      *bf.value = !has_value || value == "true" || value == "1";
      matched = true;
    }
    if (!matched)
      return absl::InvalidArgumentError(fmt::format("unknown flag -{} (see --help)", name));
  }
  return f;
}

}  // namespace shim
