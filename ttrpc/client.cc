#include "ttrpc/client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <future>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "ttrpc/ttrpc.pb.h"
#include "ttrpc/wire.h"

namespace ttrpc {

absl::StatusOr<std::shared_ptr<Client>> Client::Connect(base::EventLoop& loop,
                                                        std::string_view address,
                                                        Options options) {
  absl::StatusOr<base::UniqueFd> fd = base::DialUnix(address);
  if (!fd.ok()) return fd.status();
  return Adopt(loop, std::move(*fd), std::move(options));
}

std::shared_ptr<Client> Client::Adopt(base::EventLoop& loop, base::UniqueFd fd, Options options) {
  // The loop must never block on the peer, whoever created this socket.
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  std::shared_ptr<Client> c(new Client(loop, std::move(fd), std::move(options)));
  c->RunOnLoop([c] { c->Start(); });
  return c;
}

Client::Client(base::EventLoop& loop, base::UniqueFd fd, Options options)
    : loop_(loop), fd_(std::move(fd)), options_(std::move(options)),
      decoder_(options_.max_message_size) {}

Client::~Client() = default;

void Client::RunOnLoop(std::function<void()> fn) {
  if (loop_.InLoopThread()) {
    fn();
  } else {
    loop_.Post(std::move(fn));
  }
}

void Client::Start() {
  if (closed_) return;
  std::weak_ptr<Client> weak = weak_from_this();
  absl::Status st = loop_.Add(fd_.get(), EPOLLIN | EPOLLRDHUP, [weak](uint32_t events) {
    if (auto self = weak.lock()) self->OnEvents(events);
  });
  if (!st.ok()) CloseWith(st);
}

void Client::SetOnClose(std::function<void(absl::Status)> on_close) {
  auto self = shared_from_this();
  RunOnLoop([self, f = std::move(on_close)]() mutable { self->on_close_ = std::move(f); });
}

void Client::Call(std::string service, std::string method, std::string payload,
                  CallOptions options, Callback done) {
  auto self = shared_from_this();
  RunOnLoop([self, service = std::move(service), method = std::move(method),
             payload = std::move(payload), options = std::move(options),
             done = std::move(done)]() mutable {
    self->StartCall(std::move(service), std::move(method), std::move(payload),
                    std::move(options), std::move(done));
  });
}

void Client::StartCall(std::string service, std::string method, std::string payload,
                       CallOptions options, Callback done) {
  if (closed_) {
    done(absl::UnavailableError("ttrpc: connection closed"));
    return;
  }
  uint32_t stream = next_stream_;
  next_stream_ += 2;
  std::string frame =
      EncodeRequestFrame(stream, service, method, payload, options.metadata, options.timeout);
  if (frame.size() - kHeaderSize > options_.max_message_size) {
    // Never put a frame on the wire that the peer must refuse.
    done(absl::ResourceExhaustedError(fmt::format(
        "{}/{}: message length {} exceeds maximum message size of {}", service, method,
        frame.size() - kHeaderSize, options_.max_message_size)));
    return;
  }
  Pending p{std::move(done), 0};
  if (options.timeout != absl::InfiniteDuration()) {
    std::weak_ptr<Client> weak = weak_from_this();
    p.timer = loop_.RunAfter(options.timeout, [weak, stream] {
      if (auto self = weak.lock()) {
        self->pending_[stream].timer = 0;
        self->Fail(stream, absl::DeadlineExceededError("ttrpc: deadline exceeded"));
      }
    });
  }
  pending_.emplace(stream, std::move(p));
  Write(std::move(frame));
}

void Client::Write(std::string bytes) {
  if (!out_.empty()) {
    out_ += bytes;
    return;
  }
  ssize_t n = send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    CloseWith(base::ErrnoStatus("ttrpc: write"));
    return;
  }
  if (n < 0) n = 0;
  if (static_cast<size_t>(n) == bytes.size()) return;
  out_ = bytes.substr(static_cast<size_t>(n));
  (void)loop_.Modify(fd_.get(), EPOLLIN | EPOLLRDHUP | EPOLLOUT);
}

void Client::OnEvents(uint32_t events) {
  if (closed_) return;
  if (events & EPOLLOUT) {
    while (!out_.empty()) {
      ssize_t n = send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        CloseWith(base::ErrnoStatus("ttrpc: write"));
        return;
      }
      out_.erase(0, static_cast<size_t>(n));
    }
    if (out_.empty()) (void)loop_.Modify(fd_.get(), EPOLLIN | EPOLLRDHUP);
  }
  if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
  char buf[64 * 1024];
  for (int round = 0; round < 16 && !closed_; ++round) {
    ssize_t n = read(fd_.get(), buf, sizeof buf);
    if (n > 0) {
      decoder_.Feed(std::string_view(buf, static_cast<size_t>(n)));
      while (!closed_) {
        std::optional<Frame> frame = decoder_.Next();
        if (!frame) break;
        OnFrame(std::move(*frame));
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    CloseWith(absl::UnavailableError("ttrpc: connection closed by peer"));
    return;
  }
}

void Client::OnFrame(Frame frame) {
  uint32_t stream = frame.header.stream_id;
  if (frame.header.type != static_cast<uint8_t>(MessageType::kResponse)) {
    CloseWith(absl::InternalError(fmt::format(
        "ttrpc: unexpected message type {:#04x} from server", frame.header.type)));
    return;
  }
  if (!pending_.contains(stream)) {
    ++unmatched_;
    if (options_.log) options_.log(fmt::format("ttrpc: response for unknown stream {}", stream));
    return;
  }
  if (frame.oversized) {
    Fail(stream, absl::ResourceExhaustedError(fmt::format(
        "ttrpc: response length {} exceeds maximum message size of {}",
        frame.header.length, options_.max_message_size)));
    return;
  }
  Response resp;
  if (!resp.ParseFromArray(frame.payload().data(), static_cast<int>(frame.payload().size()))) {
    Fail(stream, absl::InternalError("ttrpc: response frame is not a ttrpc Response"));
    return;
  }
  absl::Status status = StatusOf(resp);
  auto node = pending_.extract(stream);
  if (node.mapped().timer != 0) loop_.CancelTimer(node.mapped().timer);
  if (status.ok()) {
    node.mapped().done(std::move(*resp.mutable_payload()));
  } else {
    node.mapped().done(status);
  }
}

void Client::Fail(uint32_t stream, absl::Status status) {
  auto node = pending_.extract(stream);
  if (node.empty()) return;
  if (node.mapped().timer != 0) loop_.CancelTimer(node.mapped().timer);
  node.mapped().done(std::move(status));
}

void Client::Close() {
  auto self = shared_from_this();
  RunOnLoop([self] { self->CloseWith(absl::UnavailableError("ttrpc: client closed")); });
}

void Client::CloseWith(absl::Status status) {
  if (closed_.exchange(true)) return;
  loop_.Remove(fd_.get());
  fd_.Reset();
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [stream, p] : pending) {
    if (p.timer != 0) loop_.CancelTimer(p.timer);
    p.done(status);
  }
  if (on_close_) on_close_(status);
}

absl::StatusOr<std::unique_ptr<BlockingClient>> BlockingClient::Connect(
    std::string_view address, ClientOptions options) {
  absl::StatusOr<base::UniqueFd> fd = base::DialUnix(address);
  if (!fd.ok()) return fd.status();
  auto loop = base::EventLoop::Create();
  if (!loop.ok()) return loop.status();
  std::unique_ptr<BlockingClient> bc(new BlockingClient());
  bc->loop_ = std::move(*loop);
  bc->client_ = Client::Adopt(*bc->loop_, std::move(*fd), std::move(options));
  bc->thread_ = std::thread([l = bc->loop_.get()] { l->Run(); });
  return bc;
}

BlockingClient::~BlockingClient() {
  if (client_) client_->Close();
  loop_->Stop();
  thread_.join();
  client_.reset();
}

absl::StatusOr<std::string> BlockingClient::Call(std::string service, std::string method,
                                                 std::string payload, CallOptions options) {
  std::promise<absl::StatusOr<std::string>> done;
  auto result = done.get_future();
  client_->Call(std::move(service), std::move(method), std::move(payload),
                std::move(options),
                [&done](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  return result.get();
}

}  // namespace ttrpc
