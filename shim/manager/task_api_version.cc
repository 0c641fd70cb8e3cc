#include "shim/manager/task_api_version.h"

#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "base/unique_fd.h"

namespace shim {
namespace {

// Go's build info section is a few KiB; anything far larger is not one.
constexpr size_t kMaxBuildInfo = 1 << 20;

bool ReadAt(int fd, void* buf, size_t size, off_t offset) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd, static_cast<char*>(buf) + done, size - done,
                      offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The bytes of section `name` of a 64-bit ELF file, or "" if there is none.
std::string ElfSection(int fd, std::string_view name) {
  Elf64_Ehdr eh;
  if (!ReadAt(fd, &eh, sizeof eh, 0) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) ||
      eh.e_shnum == 0 || eh.e_shstrndx >= eh.e_shnum)
    return {};
  std::vector<Elf64_Shdr> sections(eh.e_shnum);
  if (!ReadAt(fd, sections.data(), sections.size() * sizeof(Elf64_Shdr),
              static_cast<off_t>(eh.e_shoff)))
    return {};
  const Elf64_Shdr& names = sections[eh.e_shstrndx];
  if (names.sh_size > kMaxBuildInfo) return {};
  std::string strtab(names.sh_size, '\0');
  if (!ReadAt(fd, strtab.data(), strtab.size(), static_cast<off_t>(names.sh_offset))) return {};
  for (const Elf64_Shdr& s : sections) {
    if (s.sh_name >= strtab.size() || strtab.c_str() + s.sh_name != name) continue;
    if (s.sh_type == SHT_NOBITS || s.sh_size > kMaxBuildInfo) return {};
    std::string bytes(s.sh_size, '\0');
    if (!ReadAt(fd, bytes.data(), bytes.size(), static_cast<off_t>(s.sh_offset))) return {};
    return bytes;
  }
  return {};
}

}  // namespace

bool NamesContainerdV2Module(std::string_view modinfo) {
  // "mod\tgithub.com/containerd/containerd/v2\t(devel)" (containerd itself)
  // or "dep\tgithub.com/containerd/containerd/v2\tv2.1.9" (a binary that
  // embeds it); 1.x's module has no /v2.
  return modinfo.find("\tgithub.com/containerd/containerd/v2\t") != std::string_view::npos;
}

int TaskApiVersionOf(const std::string& containerd_binary) {
  if (containerd_binary.empty()) return 2;
  base::UniqueFd fd(open(containerd_binary.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 2;
  // Since Go 1.18 the module info sits inline in .go.buildinfo.
  return NamesContainerdV2Module(ElfSection(fd.get(), ".go.buildinfo")) ? 3 : 2;
}

std::string StartAnswer(const std::string& address, int task_api_version) {
  if (task_api_version < 3) return address;
  std::string quoted;
  for (char c : address) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return "{\"version\":3,\"address\":\"" + quoted + "\",\"protocol\":\"ttrpc\"}";
}

}  // namespace shim
