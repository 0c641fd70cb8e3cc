#include "shim/store/paths.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>

#include "base/unique_fd.h"
#include "fmt/format.h"

namespace shim {
namespace {

// FNV-1a: stable across builds and runs (std::hash is not), and enough to
// keep the addresses of a host's few containerd daemons apart.
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The count in an open `starts` file (0 if empty or not a number).
uint64_t ReadCount(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  uint64_t count = 0;
  if (n > 0) std::from_chars(buf, buf + n, count);
  return count;
}

}  // namespace

std::string SelfExecutable() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  return n > 0 ? std::string(exe, static_cast<size_t>(n)) : "/proc/self/exe";
}

std::string SiblingBinary(const std::string& name) {
  std::string self = SelfExecutable();
  return self.substr(0, self.rfind('/') + 1) + name;
}

std::string StableHash(const std::string& s) { return fmt::format("{:016x}", Fnv1a(s)); }

std::string InstancePaths::NamespaceSocket(const std::string& ns) const {
  return fmt::format("{}/ns-{}.sock", dir, StableHash(ns));
}

void CountAnsweredStart(const InstancePaths& paths) {
  base::UniqueFd fd(open(paths.starts().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return;
  // Always 20 digits, written in place (never truncated). The daemon reads
  // its baseline unlocked when it goes idle; a read that races this write and
  // gets a wrong number only makes it stay one more linger.
  std::string text = fmt::format("{:020d}", ReadCount(fd.get()) + 1);
  (void)!pwrite(fd.get(), text.data(), text.size(), 0);
}

uint64_t AnsweredStarts(const InstancePaths& paths) {
  base::UniqueFd fd(open(paths.starts().c_str(), O_RDONLY | O_CLOEXEC));
  return fd ? ReadCount(fd.get()) : 0;
}

InstancePaths PathsFor(const std::string& containerd_address) {
  std::string address = containerd_address;
  if (address.rfind("unix://", 0) == 0) address.erase(0, 7);
  const char* run = std::getenv("EMBED_SHIM_RUN_DIR");
  std::string root = run && *run ? run : "/run/containerd-embed";
  InstancePaths p;
  p.instance = StableHash(address);
  p.dir = root + "/" + p.instance;
  p.socket = p.dir + "/shim.sock";
  p.lock = p.dir + "/start.lock";
  p.log = p.dir + "/shim.log";
  p.state = p.dir + "/state";
  p.bpf = "/sys/fs/bpf/containerd-embed/" + p.instance;
  return p;
}

}  // namespace shim
