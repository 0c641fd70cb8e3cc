// SerialQueue: a container's mutating RPCs (Create, Start, Exec, Kill,
// Delete, Pause, Resume) run one at a time, in arrival order. Each operation
// gets a Turn; when the Turn is destroyed, however the operation ended, the
// next one runs. Nobody releases a turn by hand, so no queued RPC is left
// unanswered. Loop thread only.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <utility>

namespace shim::process {

class SerialQueue {
  struct Shared {
    bool busy = false;
    std::deque<std::function<void()>> queued;
  };

 public:
  // Held by the running operation; its end lets the next one run. Outlives
  // the queue safely: the queue's state is shared with its turns.
  class Turn {
   public:
    Turn() = default;
    Turn(Turn&& other) noexcept : shared_(std::move(other.shared_)) {}
    Turn& operator=(Turn&& other) noexcept {
      Release();
      shared_ = std::move(other.shared_);
      return *this;
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    ~Turn() { Release(); }

    void Release() {
      std::shared_ptr<Shared> shared = std::move(shared_);
      if (!shared) return;
      if (shared->queued.empty()) {
        shared->busy = false;
        return;
      }
      auto next = std::move(shared->queued.front());
      shared->queued.pop_front();
      next();  // runs with busy still set: it owns the next turn
    }

   private:
    friend class SerialQueue;
    explicit Turn(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    std::shared_ptr<Shared> shared_;
  };

  // Runs op(turn) now if nothing runs, else after those queued before it.
  void Run(std::function<void(Turn)> op) {
    auto start = [shared = shared_, op = std::move(op)]() mutable { op(Turn(shared)); };
    if (shared_->busy) {
      shared_->queued.push_back(std::move(start));
      return;
    }
    shared_->busy = true;
    start();
  }

  bool busy() const { return shared_->busy; }

 private:
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

}  // namespace shim::process
