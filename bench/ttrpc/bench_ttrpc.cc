// ttrpc round-trip benchmark on a loopback unix socket. Prints markdown.
//
//   bench_ttrpc [--calls N] [--warmup N] [--connections N] [--duration S]
//               [--payload-bytes N]
//   bench_ttrpc --socket PATH --service S --method M [--payload-hex H]
//               [--metadata KEY=VALUE]... [other flags as above]
//
// Without --socket it starts our ttrpc::Server (one EventLoop thread, an echo
// handler that replies synchronously) on a socket in a fresh temp directory
// and measures:
//   (a) latency: 1 connection, 1 call at a time, after a warmup; once through
//       ttrpc::BlockingClient, and once through a raw blocking socket that
//       writes a request frame and reads the response frame on the calling
//       thread (the server's share of the cost, without the client's loop
//       thread hand-offs);
//   (b) throughput: --connections BlockingClients, each on its own thread,
//       calling back to back for --duration seconds.
// With --socket the same measurements run against an external server (e.g.
// containerd's Go runc-v2 shim answering containerd.task.v2.Task/State).
// Calls that return an error status still count as round trips; they are
// reported in the `errors` column.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "test/support/ttrpc_socket_relay.h"
#include "fmt/format.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"
#include "ttrpc/server.h"
#include "ttrpc/ttrpc.pb.h"
#include "ttrpc/wire.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kEchoService[] = "bench.v1.Bench";
constexpr char kEchoMethod[] = "Echo";

struct Flags {
  int calls = 20000;
  int warmup = 2000;
  int connections = 16;
  double duration_s = 3.0;
  size_t payload_bytes = 32;
  // External server.
  std::string socket;
  std::string service = kEchoService;
  std::string method = kEchoMethod;
  std::optional<std::string> payload;  // from --payload-hex
  ttrpc::Metadata metadata;
};

[[noreturn]] void Die(std::string_view what) {
  fmt::print(stderr, "bench_ttrpc: {}\n", what);
  std::exit(1);
}

[[noreturn]] void Usage() {
  fmt::print(stderr,
             "usage: bench_ttrpc [--calls N] [--warmup N] [--connections N] [--duration S]\n"
             "                   [--payload-bytes N]\n"
             "                   [--socket PATH --service S --method M [--payload-hex H]\n"
             "                    [--metadata KEY=VALUE]...]\n");
  std::exit(2);
}

std::optional<std::string> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi << 4 | lo));
  }
  return out;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") Usage();
    if (i + 1 >= argc) Usage();
    std::string v = argv[++i];
    auto number = [&](auto& out) {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || d < 0) Die(fmt::format("{}: bad number {:?}", a, v));
      out = static_cast<std::remove_reference_t<decltype(out)>>(d);
    };
    if (a == "--calls") number(f.calls);
    else if (a == "--warmup") number(f.warmup);
    else if (a == "--connections") number(f.connections);
    else if (a == "--duration") number(f.duration_s);
    else if (a == "--payload-bytes") number(f.payload_bytes);
    else if (a == "--socket") f.socket = v;
    else if (a == "--service") f.service = v;
    else if (a == "--method") f.method = v;
    else if (a == "--payload-hex") {
      f.payload = FromHex(v);
      if (!f.payload) Die("--payload-hex: not an even number of hex digits");
    } else if (a == "--metadata") {
      size_t eq = v.find('=');
      if (eq == std::string::npos) Die("--metadata wants KEY=VALUE");
      f.metadata.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      Usage();
    }
  }
  if (f.calls < 1 || f.connections < 1 || f.duration_s <= 0) Usage();
  return f;
}

// --- the local server ---------------------------------------------------

// A mkdtemp directory holding the socket; removed on the way out.
class TempSocketDir {
 public:
  TempSocketDir() {
    char tmpl[] = "/tmp/bench-ttrpc-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Die(base::ErrnoStatus("mkdtemp").ToString());
    dir_ = tmpl;
  }
  ~TempSocketDir() {
    unlink(socket().c_str());
    rmdir(dir_.c_str());
  }
  std::string socket() const { return dir_ + "/bench.sock"; }

 private:
  std::string dir_;
};

// Our Server with an echo handler, on a loop thread of its own.
class LocalServer {
 public:
  explicit LocalServer(const std::string& path) {
    absl::StatusOr<std::unique_ptr<base::EventLoop>> loop = base::EventLoop::Create();
    if (!loop.ok()) Die(loop.status().ToString());
    loop_ = std::move(*loop);
    ttrpc::ServerOptions o;
    o.log = [](std::string_view line) { fmt::print(stderr, "server: {}\n", line); };
    server_ = std::make_unique<ttrpc::Server>(*loop_, std::move(o));
    server_->Register(kEchoService, kEchoMethod,
                      [](ttrpc::RequestContext, std::string payload, ttrpc::Responder r) {
                        r.Reply(std::move(payload));
                      });
    absl::StatusOr<base::UniqueFd> listener = base::ListenUnix(path);
    if (!listener.ok()) Die(listener.status().ToString());
    // The server's connections are relayed to it, as the keeper does.
    relay_ = std::make_unique<test::SocketRelay>(*loop_, *server_);
    // Before Run(): allowed from this thread.
    if (absl::Status s = relay_->Listen(std::move(*listener)); !s.ok()) Die(s.ToString());
    thread_ = std::thread([this] { loop_->Run(); });
  }
  ~LocalServer() {
    loop_->Stop();
    thread_.join();
    relay_.reset();  // touch the loop's maps: only once the loop has stopped
    server_.reset();
  }

 private:
  std::unique_ptr<base::EventLoop> loop_;
  std::unique_ptr<ttrpc::Server> server_;
  std::unique_ptr<test::SocketRelay> relay_;
  std::thread thread_;
};

// --- measurements --------------------------------------------------------

struct CallSpec {
  std::string address;
  std::string service;
  std::string method;
  std::string payload;
  ttrpc::Metadata metadata;
};

struct Cpu {
  double user_s = 0, sys_s = 0;
  static Cpu Now() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return {u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6, u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6};
  }
};

struct Result {
  std::string name;
  int connections = 1;
  uint64_t calls = 0;
  uint64_t errors = 0;
  double seconds = 0;
  std::vector<double> latencies_us;  // sorted
  double cpu_us_per_call = 0;        // this whole process (client and, if local, server)
  std::string first_error;

  double Percentile(double p) const {
    if (latencies_us.empty()) return 0;
    size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(latencies_us.size() - 1) + 0.5);
    return latencies_us[std::min(i, latencies_us.size() - 1)];
  }
  double Mean() const {
    double sum = 0;
    for (double l : latencies_us) sum += l;
    return latencies_us.empty() ? 0 : sum / static_cast<double>(latencies_us.size());
  }
};

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

ttrpc::CallOptions Options(const CallSpec& spec) {
  ttrpc::CallOptions o;
  o.metadata = spec.metadata;
  return o;
}

std::unique_ptr<ttrpc::BlockingClient> ConnectOrDie(const std::string& address) {
  absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> c =
      ttrpc::BlockingClient::Connect(address);
  if (!c.ok()) Die(fmt::format("connect {}: {}", address, c.status()));
  return std::move(*c);
}

void Count(Result& r, const absl::Status& s) {
  ++r.calls;
  if (s.ok()) return;
  if (r.errors++ == 0) r.first_error = s.ToString();
  // A dead connection would make every later "call" instant: stop at once.
  if (absl::IsUnavailable(s)) Die(fmt::format("{}: {}", r.name, s));
}

// (a) with BlockingClient.
Result LatencyBlockingClient(const CallSpec& spec, const Flags& f) {
  Result r;
  r.name = "unary latency, BlockingClient";
  auto client = ConnectOrDie(spec.address);
  for (int i = 0; i < f.warmup; ++i)
    (void)client->Call(spec.service, spec.method, spec.payload, Options(spec));
  r.latencies_us.reserve(static_cast<size_t>(f.calls));
  Cpu c0 = Cpu::Now();
  Clock::time_point start = Clock::now();
  for (int i = 0; i < f.calls; ++i) {
    Clock::time_point t0 = Clock::now();
    absl::StatusOr<std::string> reply =
        client->Call(spec.service, spec.method, spec.payload, Options(spec));
    r.latencies_us.push_back(Us(Clock::now() - t0));
    Count(r, reply.status());
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Cpu c1 = Cpu::Now();
  r.cpu_us_per_call = (c1.user_s + c1.sys_s - c0.user_s - c0.sys_s) * 1e6 / f.calls;
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  return r;
}

// A minimal blocking ttrpc client on the calling thread: no event loop, no
// hand-off. Reads exactly one response frame per request.
class RawClient {
 public:
  explicit RawClient(const std::string& address) {
    absl::StatusOr<base::UniqueFd> fd = base::DialUnix(address);
    if (!fd.ok()) Die(fmt::format("connect {}: {}", address, fd.status()));
    fd_ = std::move(*fd);  // DialUnix gives a blocking socket
  }

  absl::Status Call(const CallSpec& spec) {
    std::string frame = ttrpc::EncodeRequestFrame(stream_, spec.service, spec.method,
                                                  spec.payload, spec.metadata,
                                                  absl::InfiniteDuration());
    stream_ += 2;
    std::string_view out = frame;
    while (!out.empty()) {
      ssize_t n = write(fd_.get(), out.data(), out.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return base::ErrnoStatus("write");
      out.remove_prefix(static_cast<size_t>(n));
    }
    for (;;) {
      if (std::optional<ttrpc::Frame> f = decoder_.Next()) {
        ttrpc::Response resp;
        if (!resp.ParseFromArray(f->payload().data(), static_cast<int>(f->payload().size())))
          return absl::InternalError("bad Response");
        return ttrpc::StatusOf(resp);
      }
      ssize_t n = read(fd_.get(), buf_, sizeof buf_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return base::ErrnoStatus("read");
      if (n == 0) return absl::UnavailableError("server closed the connection");
      decoder_.Feed(std::string_view(buf_, static_cast<size_t>(n)));
    }
  }

 private:
  base::UniqueFd fd_;
  uint32_t stream_ = 1;
  ttrpc::FrameDecoder decoder_;
  char buf_[65536];
};

Result LatencyRaw(const CallSpec& spec, const Flags& f) {
  Result r;
  r.name = "unary latency, raw blocking socket client";
  auto client = std::make_unique<RawClient>(spec.address);
  for (int i = 0; i < f.warmup; ++i) (void)client->Call(spec);
  r.latencies_us.reserve(static_cast<size_t>(f.calls));
  Cpu c0 = Cpu::Now();
  Clock::time_point start = Clock::now();
  for (int i = 0; i < f.calls; ++i) {
    Clock::time_point t0 = Clock::now();
    absl::Status s = client->Call(spec);
    r.latencies_us.push_back(Us(Clock::now() - t0));
    Count(r, s);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Cpu c1 = Cpu::Now();
  r.cpu_us_per_call = (c1.user_s + c1.sys_s - c0.user_s - c0.sys_s) * 1e6 / f.calls;
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  return r;
}

// (b) N connections, one BlockingClient per thread, back to back until the
// common end time.
Result Throughput(const CallSpec& spec, const Flags& f) {
  Result r;
  r.name = "unary throughput, one BlockingClient per thread";
  r.connections = f.connections;
  const size_t n = static_cast<size_t>(f.connections);
  std::vector<std::unique_ptr<ttrpc::BlockingClient>> clients;
  for (size_t i = 0; i < n; ++i) clients.push_back(ConnectOrDie(spec.address));
  for (auto& c : clients) {  // warm every connection up
    for (int i = 0; i < 100; ++i) (void)c->Call(spec.service, spec.method, spec.payload, Options(spec));
  }

  std::vector<Result> per_thread(n);
  std::latch ready(static_cast<std::ptrdiff_t>(n) + 1);
  std::atomic<int64_t> end_ns{0};  // set once all threads are ready
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      Result& mine = per_thread[t];
      mine.name = r.name;
      mine.latencies_us.reserve(1 << 16);
      ready.arrive_and_wait();
      const Clock::time_point end{Clock::duration(end_ns.load())};
      for (;;) {
        Clock::time_point t0 = Clock::now();
        if (t0 >= end) break;
        absl::StatusOr<std::string> reply =
            clients[t]->Call(spec.service, spec.method, spec.payload, Options(spec));
        mine.latencies_us.push_back(Us(Clock::now() - t0));
        Count(mine, reply.status());
      }
    });
  }
  Cpu c0 = Cpu::Now();
  const Clock::time_point start = Clock::now();
  end_ns = (start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(f.duration_s)))
               .time_since_epoch()
               .count();
  ready.arrive_and_wait();
  for (auto& th : threads) th.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Cpu c1 = Cpu::Now();
  for (Result& m : per_thread) {
    r.calls += m.calls;
    r.errors += m.errors;
    if (r.first_error.empty()) r.first_error = m.first_error;
    r.latencies_us.insert(r.latencies_us.end(), m.latencies_us.begin(), m.latencies_us.end());
  }
  if (r.calls > 0)
    r.cpu_us_per_call = (c1.user_s + c1.sys_s - c0.user_s - c0.sys_s) * 1e6 / static_cast<double>(r.calls);
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  clients.clear();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);

  std::optional<TempSocketDir> dir;
  std::optional<LocalServer> server;
  CallSpec spec;
  spec.service = f.service;
  spec.method = f.method;
  spec.metadata = f.metadata;
  std::string target;
  if (f.socket.empty()) {
    dir.emplace();
    server.emplace(dir->socket());
    spec.address = dir->socket();
    spec.payload = std::string(f.payload_bytes, 'x');
    target = "our ttrpc::Server (1 loop thread, echo handler)";
  } else {
    spec.address = f.socket;
    spec.payload = f.payload.value_or("");
    target = fmt::format("external server at {}", f.socket);
  }

  std::vector<Result> latency;
  latency.push_back(LatencyBlockingClient(spec, f));
  latency.push_back(LatencyRaw(spec, f));
  Result tput = Throughput(spec, f);

  fmt::print("## ttrpc unary round trips on a loopback unix socket\n\n");
  fmt::print("- server: {}\n", target);
  fmt::print("- call: {}/{}, request payload {} bytes\n", spec.service, spec.method,
             spec.payload.size());
  fmt::print("- host: {} CPUs online; CPU per call is this process's user+sys time{}\n\n",
             std::thread::hardware_concurrency(),
             f.socket.empty() ? " (client and server)" : " (client only)");
  fmt::print("| measurement | conns | calls | errors | median | p99 | mean | max | CPU/call |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : latency) {
    fmt::print("| {} (warmup {}) | {} | {} | {} | {:.1f} us | {:.1f} us | {:.1f} us | {:.0f} us | {:.1f} us |\n",
               r.name, f.warmup, r.connections, r.calls, r.errors, r.Percentile(50),
               r.Percentile(99), r.Mean(), r.latencies_us.empty() ? 0 : r.latencies_us.back(),
               r.cpu_us_per_call);
  }
  fmt::print("\n| measurement | conns | duration | calls | errors | calls/s | median | p99 | CPU/call |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} | {:.2f} s | {} | {} | {:.0f} | {:.1f} us | {:.1f} us | {:.1f} us |\n",
             tput.name, tput.connections, tput.seconds, tput.calls, tput.errors,
             static_cast<double>(tput.calls) / tput.seconds, tput.Percentile(50),
             tput.Percentile(99), tput.cpu_us_per_call);
  for (const Result* r : {&latency[0], &latency[1], &tput}) {
    if (!r->first_error.empty())
      fmt::print("\n{}: first error: {}\n", r->name, r->first_error);
  }
  return 0;
}
