// containerd's rule for namespaces, container ids and exec ids.
#pragma once

#include <string>

namespace shim {

// [A-Za-z0-9]+([._-][A-Za-z0-9]+)*, at most 76 characters. Namespaces and
// ids become path components, so "../x" must never pass.
bool IsValidIdentifier(const std::string& s);

}  // namespace shim
