#include "shim/event_publisher.h"

#include <sys/time.h>

#include "base/absl_fmt.h"
#include "events_ttrpc.pb.h"
#include "shim/log.h"

namespace shim {

EventPublisher::EventPublisher(ttrpc::EventLoop& loop, std::string ttrpc_address)
    : loop_(loop), address_(std::move(ttrpc_address)) {}

void EventPublisher::Publish(const std::string& ns, const std::string& topic,
                             const google::protobuf::Message& event) {
  containerd::services::events::ttrpc::v1::ForwardRequest req;
  auto* env = req.mutable_envelope();
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  env->mutable_timestamp()->set_seconds(now.tv_sec);
  env->mutable_timestamp()->set_nanos(static_cast<int32_t>(now.tv_nsec));
  env->set_namespace_(ns);
  env->set_topic(topic);
  // containerd 1.6 resolves bare message names, not type.googleapis.com/ URLs.
  env->mutable_event()->set_type_url(event.GetDescriptor()->full_name());
  env->mutable_event()->set_value(event.SerializeAsString());
  queue_.push_back(req.SerializeAsString());
  LogFor(LogLevel::kDebug, ns, "", "queued event {}", topic);
  Pump();
}

void EventPublisher::Pump() {
  if (in_flight_ || retry_armed_ || queue_.empty()) return;
  if (address_.empty()) {
    LogError("TTRPC_ADDRESS is not set: {} events cannot be delivered", queue_.size());
    return;
  }
  if (!client_ || client_->closed()) {
    auto c = ttrpc::Client::Connect(loop_, address_);
    if (!c.ok()) {
      LogWarn("events: connect {}: {}; retrying", address_, c.status());
      Retry();
      return;
    }
    client_ = std::move(*c);
  }
  in_flight_ = true;
  ttrpc::CallOptions opts;
  opts.timeout = absl::Seconds(5);
  client_->Call("containerd.services.events.ttrpc.v1.Events", "Forward", queue_.front(),
                std::move(opts), [this](absl::StatusOr<std::string> r) {
                  in_flight_ = false;
                  if (r.ok() || absl::IsInvalidArgument(r.status())) {
                    // InvalidArgument will never succeed: say so and move on.
                    if (!r.ok()) LogError("events: containerd refused an event: {}", r.status());
                    queue_.pop_front();
                    ++delivered_;
                    backoff_ = absl::Milliseconds(50);
                    Pump();
                    return;
                  }
                  LogWarn("events: forward failed: {}; {} queued, retrying", r.status(),
                          queue_.size());
                  if (client_) client_->Close();
                  client_.reset();
                  Retry();
                });
}

void EventPublisher::Retry() {
  retry_armed_ = true;
  loop_.RunAfter(backoff_, [this] {
    retry_armed_ = false;
    Pump();
  });
  backoff_ = std::min(backoff_ * 2, absl::Seconds(2));
}

}  // namespace shim
