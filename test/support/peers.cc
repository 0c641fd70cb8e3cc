#include "test/support/peers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "fmt/format.h"
#include "test/support/fs_util.h"
#include "test/support/subprocess.h"

#ifndef TEST_SUPPORT_SOURCE_ROOT
#define TEST_SUPPORT_SOURCE_ROOT ""
#endif

namespace test_support {
namespace {

// Unpacked trees live outside any test's temp dir so that every test (and
// every run until reboot) reuses them.
constexpr char kCacheDir[] = "/var/tmp/embed-peers";

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// "1.7.34" from "containerd-v1.7.34"; the whole name when it has no "-v".
std::string VersionOf(std::string_view name) {
  size_t v = name.rfind("-v");
  return std::string(v == std::string_view::npos ? name : name.substr(v + 2));
}

}  // namespace

std::string PeersDir() {
  if (const char* dir = getenv("EMBED_PEERS_DIR"); dir != nullptr && *dir != '\0') return dir;
  return std::string(TEST_SUPPORT_SOURCE_ROOT) + "/../shared/peers";
}

absl::StatusOr<PeerRelease> FindPeer(std::string_view name) {
  std::string archive = fmt::format("{}/{}.tar.xz", PeersDir(), name);
  if (!Exists(archive))
    return absl::NotFoundError(fmt::format(
        "peer {} is absent: no {} (set EMBED_PEERS_DIR to the folder of the peers' archives)",
        name, archive));
  PeerRelease peer{std::string(name), VersionOf(name), fmt::format("{}/{}/bin", kCacheDir, name)};
  if (Exists(peer.bin_dir + "/.unpacked")) return peer;

  if (absl::Status s = MakeDirs(kCacheDir); !s.ok()) return s;
  // One unpacker at a time: tests of several executables may ask at once.
  std::string lock_path = fmt::format("{}/{}.lock", kCacheDir, name);
  int lock = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) return absl::InternalError(fmt::format("open {}: {}", lock_path, strerror(errno)));
  std::unique_ptr<int, void (*)(int*)> unlock(&lock, [](int* fd) { close(*fd); });
  if (flock(lock, LOCK_EX) != 0)
    return absl::InternalError(fmt::format("flock {}: {}", lock_path, strerror(errno)));
  if (Exists(peer.bin_dir + "/.unpacked")) return peer;

  absl::StatusOr<Result> tar = Run({"tar", "-xJf", archive, "-C", kCacheDir},
                                   std::chrono::seconds(120));
  if (!tar.ok()) return tar.status();
  if (!tar->ok()) return absl::InternalError(fmt::format("unpack {}: {}", archive, tar->ToString()));
  if (!Exists(peer.bin_dir))
    return absl::InternalError(fmt::format("{} has no {}/bin", archive, name));
  if (absl::Status s = WriteFile(peer.bin_dir + "/.unpacked", ""); !s.ok()) return s;
  return peer;
}

std::vector<std::string> PeerContainerdNames() {
  std::vector<std::string> names;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(PeersDir().c_str()), closedir);
  if (dir == nullptr) return names;
  constexpr std::string_view kPrefix = "containerd-v", kSuffix = ".tar.xz";
  while (dirent* e = readdir(dir.get())) {
    std::string_view file = e->d_name;
    if (file.starts_with(kPrefix) && file.ends_with(kSuffix))
      names.emplace_back(file.substr(0, file.size() - kSuffix.size()));
  }
  // Oldest first: compare the dotted versions numerically.
  auto numbers = [](const std::string& name) {
    std::vector<int> out;
    for (const std::string& part : Split(VersionOf(name), '.')) out.push_back(atoi(part.c_str()));
    return out;
  };
  std::sort(names.begin(), names.end(),
            [&](const std::string& a, const std::string& b) { return numbers(a) < numbers(b); });
  return names;
}

std::string ContainerdUnderTest::Describe() const {
  if (bin_dir.empty()) return fmt::format("containerd {}.{} (Debian)", major, minor);
  return fmt::format("containerd {}", VersionOf(name));
}

absl::StatusOr<ContainerdUnderTest> ContainerdFromEnv() {
  ContainerdUnderTest c;
  const char* env = getenv("EMBED_CONTAINERD");
  if (env == nullptr || *env == '\0' || std::string_view(env) == "debian") return c;
  absl::StatusOr<PeerRelease> peer = FindPeer(env);
  if (!peer.ok()) return peer.status();
  std::vector<std::string> parts = Split(peer->version, '.');
  if (parts.size() < 2)
    return absl::InvalidArgumentError(
        fmt::format("EMBED_CONTAINERD={}: no major.minor version in the name", env));
  c.name = env;
  c.major = atoi(parts[0].c_str());
  c.minor = atoi(parts[1].c_str());
  c.containerd = peer->Binary("containerd");
  c.ctr = peer->Binary("ctr");
  c.bin_dir = peer->bin_dir;
  return c;
}

}  // namespace test_support
