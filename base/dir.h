// UniqueDir: the one owner of a directory stream (closedir exactly once), and
// ForEachEntry over a directory's entries.
#pragma once

#include <dirent.h>

#include <memory>
#include <string>
#include <string_view>

#include "base/unique_fd.h"

namespace base {

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};
using UniqueDir = std::unique_ptr<DIR, DirCloser>;

// opendir(path); null with errno set when it fails.
inline UniqueDir OpenDir(const std::string& path) { return UniqueDir(::opendir(path.c_str())); }

// fdopendir(fd): the stream takes `fd` over. Null with errno set when it
// fails; `fd` then stays the caller's.
inline UniqueDir OpenDir(UniqueFd& fd) {
  UniqueDir dir(::fdopendir(fd.get()));
  if (dir) fd.Release();
  return dir;
}

// Calls fn(const dirent&) for each entry of the directory at `path` but "."
// and "..". False, with errno set, when the directory cannot be opened.
template <typename Fn>
bool ForEachEntry(const std::string& path, Fn&& fn) {
  UniqueDir dir = OpenDir(path);
  if (!dir) return false;
  while (const dirent* e = ::readdir(dir.get())) {
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    fn(*e);
  }
  return true;
}

}  // namespace base
