// EventPublisher: forwards task events to containerd over its ttrpc events
// service ($TTRPC_ADDRESS, Events/Forward), one at a time and in order.
// While containerd is unreachable (it restarts) events wait in the queue and
// go out, in order, once it is back: none is dropped for being late.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include "google/protobuf/message.h"
#include "ttrpc/client.h"
#include "ttrpc/event_loop.h"

namespace shim {

class EventPublisher {
 public:
  EventPublisher(ttrpc::EventLoop& loop, std::string ttrpc_address);

  // Queues `event` under `topic` ("/tasks/exit") in `ns`, stamped now.
  // Loop thread.
  void Publish(const std::string& ns, const std::string& topic,
               const google::protobuf::Message& event);

  size_t queued() const { return queue_.size(); }
  uint64_t delivered() const { return delivered_; }

 private:
  void Pump();
  void Retry();

  ttrpc::EventLoop& loop_;
  std::string address_;
  std::shared_ptr<ttrpc::Client> client_;
  std::deque<std::string> queue_;  // serialised ForwardRequests, oldest first
  bool in_flight_ = false;
  bool retry_armed_ = false;
  absl::Duration backoff_ = absl::Milliseconds(50);
  uint64_t delivered_ = 0;
};

}  // namespace shim
