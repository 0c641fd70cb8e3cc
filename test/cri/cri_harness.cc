#include "test/cri/cri_harness.h"

#include <glob.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "test/support/peers.h"

#ifndef CRI_SOURCE_DIR
#define CRI_SOURCE_DIR ""
#endif
#ifndef CRI_PROGRAMS_DIR
#define CRI_PROGRAMS_DIR ""
#endif
#ifndef CRI_DOCS
#define CRI_DOCS ""
#endif

namespace test_support {
namespace {

constexpr char kCriTools[] = "cri-tools-v1.26.1";
constexpr char kCniBinDir[] = "/usr/lib/cni";
// Where scripts/install-deps puts Debian's busybox package (not installed: it
// conflicts with busybox-static).
constexpr char kBusyboxDebGlob[] = "/var/cache/embed-test/busybox_*.deb";

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string FindBusyboxDeb() {
  if (const char* env = std::getenv("EMBED_BUSYBOX_DEB"); env != nullptr && *env != '\0')
    return env;
  glob_t g{};
  std::string found;
  if (glob(kBusyboxDebGlob, 0, nullptr, &g) == 0 && g.gl_pathc > 0) found = g.gl_pathv[0];
  globfree(&g);
  return found;
}

// "1.6.20" from `containerd --version` ("containerd github.com/containerd/
// containerd 1.6.20~ds1 ..." or "... containerd/v2 v2.3.4 db88...").
absl::StatusOr<std::string> ContainerdVersion(const std::string& containerd) {
  absl::StatusOr<Result> r = Run({containerd, "--version"}, std::chrono::seconds(30));
  if (!r.ok()) return r.status();
  std::vector<std::string> words = Split(r->out, ' ');
  if (!r->ok() || words.size() < 3)
    return absl::InternalError(fmt::format("{} --version: {}", containerd, r->ToString()));
  std::string v = words[2];
  if (!v.empty() && v[0] == 'v') v.erase(0, 1);
  v = v.substr(0, v.find_first_of("~+-\n"));
  return v;
}

// Every pod gets an address on a bridge of the test's own network namespace;
// host ports are DNATed there too. IPAM state stays in the harness dir.
std::string CniConfig(const std::string& ipam_dir) {
  return fmt::format(R"({{
  "cniVersion": "1.0.0",
  "name": "embed-cri-test",
  "plugins": [
    {{"type": "bridge", "bridge": "cni-embed0", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.88.0.0/16"}}]],
               "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{}"}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}},
    {{"type": "loopback"}}
  ]
}}
)",
                     ipam_dir);
}

std::string XmlUnescape(std::string_view s) {
  return absl::StrReplaceAll(std::string(s), {{"&quot;", "\""}, {"&#34;", "\""}, {"&apos;", "'"},
                                 {"&#39;", "'"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}});
}

// The value of attribute `name` in the tag text `tag`, or "".
std::string Attribute(std::string_view tag, std::string_view name) {
  std::string key = fmt::format(" {}=\"", name);
  size_t at = tag.find(key);
  if (at == std::string_view::npos) return {};
  at += key.size();
  size_t end = tag.find('"', at);
  if (end == std::string_view::npos) return {};
  return XmlUnescape(tag.substr(at, end - at));
}

}  // namespace

absl::StatusOr<std::string> DocumentedRuntimeHandler(int version) {
  absl::StatusOr<std::string> doc = ReadFile(CRI_DOCS);
  if (!doc.ok()) return doc.status();
  std::string marker = fmt::format("<!-- cri-config: version {} -->", version);
  size_t at = doc->find(marker);
  if (at == std::string::npos)
    return absl::NotFoundError(fmt::format("{} has no \"{}\"", CRI_DOCS, marker));
  constexpr std::string_view kOpen = "```toml\n", kClose = "```";
  size_t open = doc->find(kOpen, at);
  size_t close = open == std::string::npos ? open : doc->find(kClose, open + kOpen.size());
  if (close == std::string::npos)
    return absl::NotFoundError(fmt::format("{}: no ```toml block after \"{}\"", CRI_DOCS, marker));
  return doc->substr(open + kOpen.size(), close - open - kOpen.size());
}

absl::StatusOr<std::string> CriConfig(int version, const std::string& registry,
                                      const std::string& harness_dir) {
  absl::StatusOr<std::string> handler = DocumentedRuntimeHandler(version);
  if (!handler.ok()) return handler.status();
  std::string cri;
  if (version == 2) {
    cri = fmt::format(R"(
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

# The embed handler, exactly as docs/CRI.md documents it:
)",
                      fmt::arg("cni_bin", kCniBinDir), fmt::arg("dir", harness_dir),
                      fmt::arg("registry", registry));
  } else {
    cri = fmt::format(R"(
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{dir}/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{dir}/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

# The embed handler, exactly as docs/CRI.md documents it:
)",
                      fmt::arg("cni_bin", kCniBinDir), fmt::arg("dir", harness_dir));
  }
  return cri + *handler;
}

absl::StatusOr<std::vector<CritestSpec>> ParseJunit(const std::string& xml) {
  std::vector<CritestSpec> specs;
  size_t at = 0;
  while ((at = xml.find("<testcase ", at)) != std::string::npos) {
    size_t end = xml.find('>', at);
    if (end == std::string::npos) return absl::InvalidArgumentError("truncated JUnit report");
    std::string_view tag(xml.data() + at, end - at);
    at = end;
    std::string name = Attribute(tag, "name");
    if (!name.starts_with("[It] ")) continue;  // BeforeSuite, AfterSuite, ...
    CritestSpec spec{name.substr(5), Attribute(tag, "status"), 0};
    spec.seconds = std::strtod(Attribute(tag, "time").c_str(), nullptr);
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError("JUnit report lists no spec");
  return specs;
}

void SkipRun(const absl::Status& why) {
  fmt::print("SKIP: {}\n", std::string(why.message()));
  std::fflush(stdout);
  std::_Exit(77);
}

std::vector<std::string> CritestReport::Failed() const {
  std::vector<std::string> out;
  for (const CritestSpec& s : specs)
    if (s.status == "failed") out.push_back(s.name);
  return out;
}

std::vector<std::string> CritestReport::Passed() const {
  std::vector<std::string> out;
  for (const CritestSpec& s : specs)
    if (s.status == "passed") out.push_back(s.name);
  return out;
}

std::string CritestReport::Summary() const {
  return fmt::format("critest {} on containerd {}: {} passed, {} failed, {} skipped in {:.0f} s",
                     runtime_handler, containerd_version, passed, failed, skipped, seconds);
}

absl::StatusOr<std::unique_ptr<CriHarness>> CriHarness::Start(CriHarnessOptions options) {
  // Prerequisites first: each absent one is a reason to skip.
  const std::string deb = FindBusyboxDeb();
  if (deb.empty() || !Exists(deb))
    return absl::NotFoundError(fmt::format(
        "no Debian busybox package at {} (scripts/install-deps downloads it)", kBusyboxDebGlob));
  for (const char* plugin : {"bridge", "host-local", "portmap", "loopback"}) {
    if (!Exists(fmt::format("{}/{}", kCniBinDir, plugin)))
      return absl::NotFoundError(fmt::format(
          "no CNI plugin {}/{} (Debian's containernetworking-plugins)", kCniBinDir, plugin));
  }
  const char* path_env = std::getenv("PATH");
  for (const char* program : {"iptables", "python3", "ip", "ipcmk"}) {
    if (!FindInPath(program, path_env ? path_env : "/usr/sbin:/usr/bin:/sbin:/bin").ok())
      return absl::NotFoundError(fmt::format("{} is not installed", program));
  }
  absl::StatusOr<PeerRelease> cri_tools = FindPeer(kCriTools);
  if (!cri_tools.ok()) return cri_tools.status();
  PrivateContainerdOptions cd_options;
  if (!options.containerd_peer.empty()) {
    absl::StatusOr<PeerRelease> peer = FindPeer(options.containerd_peer);
    if (!peer.ok()) return peer.status();
    cd_options.containerd = peer->Binary("containerd");
    cd_options.ctr = peer->Binary("ctr");
    // Its own containerd-shim-runc-v2 for the runc handler.
    cd_options.extra_path = std::vector<std::string>{DefaultShimDir(), peer->bin_dir};
  }

  std::unique_ptr<CriHarness> h(new CriHarness());
  if (!h->temp_.ok()) return h->temp_.status();
  h->dir_ = h->temp_.path();
  h->crictl_ = cri_tools->Binary("crictl");
  h->critest_ = cri_tools->Binary("critest");
  absl::StatusOr<std::string> version = ContainerdVersion(cd_options.containerd);
  if (!version.ok()) return version.status();
  h->version_ = *version;
  const int config_version = h->version_.starts_with("1.") ? 2 : 3;

  // From here on this thread, and all it starts, is in namespaces of its own.
  if (unshare(CLONE_NEWNET | CLONE_NEWIPC) != 0) return base::ErrnoStatus("unshare(NET|IPC)");
  absl::StatusOr<Result> lo = Run({"ip", "link", "set", "lo", "up"});
  if (!lo.ok()) return lo.status();
  if (!lo->ok()) return absl::InternalError("ip link set lo up: " + lo->ToString());

  for (const char* sub : {"/cni", "/ipam", "/certs.d/_default", "/images"}) {
    if (absl::Status s = MakeDirs(h->dir_ + sub); !s.ok()) return s;
  }
  if (absl::Status s = WriteFile(h->dir_ + "/cni/10-embed-cri.conflist", CniConfig(h->dir_ + "/ipam"));
      !s.ok())
    return s;

  SpawnOptions reg;
  reg.argv = {"python3", std::string(CRI_SOURCE_DIR) + "/registry.py", "--busybox-deb", deb,
              "--programs", std::string(CRI_PROGRAMS_DIR) + "/images", "--store",
              h->dir_ + "/images", "--listen", "127.0.0.1:0"};
  reg.env = {{"TMPDIR", h->dir_}};
  reg.err = OutputSpec::File(h->dir_ + "/registry.log");
  absl::StatusOr<Subprocess> registry = Subprocess::Spawn(std::move(reg));
  if (!registry.ok()) return registry.status();
  h->registry_.emplace(std::move(*registry));
  if (absl::Status s = h->registry_->WaitForOutput("\n", DeadlineIn(std::chrono::seconds(120)));
      !s.ok()) {
    absl::StatusOr<std::string> log = ReadFile(h->dir_ + "/registry.log");
    return absl::InternalError(fmt::format("registry did not start: {}\n{}", s.ToString(),
                                           log.ok() ? *log : std::string()));
  }
  std::vector<std::string> listening = Split(h->registry_->out(), ' ');
  if (listening.size() != 2 || listening[0] != "listening")
    return absl::InternalError("registry says: " + h->registry_->out());
  std::string registry_address = listening[1];
  while (!registry_address.empty() && registry_address.back() == '\n') registry_address.pop_back();
  if (absl::Status s = WriteFile(h->dir_ + "/certs.d/_default/hosts.toml",
                                 fmt::format("[host.\"http://{}\"]\n  capabilities = [\"pull\", "
                                             "\"resolve\"]\n",
                                             registry_address));
      !s.ok())
    return s;

  absl::StatusOr<std::string> config = CriConfig(config_version, registry_address, h->dir_);
  if (!config.ok()) return config.status();
  cd_options.config_version = config_version;
  cd_options.disable_cri = false;
  cd_options.extra_config = *config;
  cd_options.log_level = "debug";
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start(cd_options);
  if (!cd.ok()) return cd.status();
  h->containerd_ = std::move(*cd);
  // The CRI plugin answers (and found its CNI config) or says why not.
  absl::StatusOr<Result> info = h->Crictl({"info"}, std::chrono::seconds(60));
  if (!info.ok()) return info.status();
  if (!info->ok()) return absl::InternalError("crictl info: " + info->ToString());
  return h;
}

CriHarness::~CriHarness() {
  std::string instance;
  if (containerd_) {
    // The shim's instance (the contract in shim/store/paths.h: FNV-1a of
    // containerd's address), which a shim killed by the teardown leaves.
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : containerd_->address()) {
      h ^= c;
      h *= 1099511628211ull;
    }
    instance = fmt::format("{:016x}", h);
  }
  containerd_.reset();  // first: its teardown kills containers and shims
  if (registry_) (void)registry_->Kill(SIGTERM, DeadlineIn(std::chrono::seconds(5)));
  if (instance.empty()) return;
  const char* run = std::getenv("EMBED_SHIM_RUN_DIR");
  for (const std::string& leftover :
       {fmt::format("{}/{}", run && *run ? run : "/run/containerd-embed", instance),
        fmt::format("/sys/fs/bpf/containerd-embed/{}", instance)}) {
    if (!Exists(leftover)) continue;
    if (absl::Status s = RemoveTree(leftover); !s.ok())
      fmt::print(stderr, "CriHarness teardown: removing {}: {}\n", leftover, s.ToString());
  }
}

std::string CriHarness::endpoint() const { return "unix://" + containerd_->address(); }

std::vector<std::string> CriHarness::CrictlArgv(std::vector<std::string> args) const {
  std::vector<std::string> argv = {crictl_, "--runtime-endpoint", endpoint(), "--image-endpoint",
                                   endpoint(), "--timeout", "60s"};
  for (std::string& a : args) argv.push_back(std::move(a));
  return argv;
}

absl::StatusOr<Result> CriHarness::Crictl(std::vector<std::string> args,
                                          Clock::duration timeout) {
  return Run(CrictlArgv(std::move(args)), timeout);
}

absl::StatusOr<CritestReport> CriHarness::RunCritest(const CritestOptions& options) {
  const int n = ++critest_runs_;
  CritestReport report;
  report.runtime_handler = options.runtime_handler;
  report.containerd_version = version_;
  report.output_path = fmt::format("{}/critest-{}-{}.log", dir_, options.runtime_handler, n);
  const std::string junit = fmt::format("{}/critest-{}-{}.xml", dir_, options.runtime_handler, n);
  SpawnOptions o;
  o.argv = {critest_, "-runtime-endpoint", endpoint(), "-image-endpoint", endpoint(),
            "-runtime-handler", options.runtime_handler, "-ginkgo.no-color",
            "-ginkgo.junit-report", junit,
            "-ginkgo.timeout", fmt::format("{}s", options.timeout.count())};
  if (!options.skip.empty()) {
    o.argv.push_back("-ginkgo.skip");
    o.argv.push_back(options.skip);
  }
  if (!options.focus.empty()) {
    o.argv.push_back("-ginkgo.focus");
    o.argv.push_back(options.focus);
  }
  o.cwd = dir_;
  o.out = OutputSpec::File(report.output_path);
  o.err = OutputSpec::ToStdout();
  const Clock::time_point started = Clock::now();
  absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(o));
  if (!p.ok()) return p.status();
  absl::StatusOr<ExitStatus> st = p->Wait(options.timeout + std::chrono::seconds(60));
  if (!st.ok()) return st.status();
  report.exit_code = st->ShellCode();
  report.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  absl::StatusOr<std::string> xml = ReadFile(junit);
  if (!xml.ok())
    return absl::InternalError(fmt::format("critest ({}) wrote no report; see {}",
                                           st->ToString(), report.output_path));
  absl::StatusOr<std::vector<CritestSpec>> specs = ParseJunit(*xml);
  if (!specs.ok()) return specs.status();
  report.specs = std::move(*specs);
  for (const CritestSpec& s : report.specs) {
    if (s.status == "passed") ++report.passed;
    else if (s.status == "failed") ++report.failed;
    else ++report.skipped;
  }
  return report;
}

}  // namespace test_support
