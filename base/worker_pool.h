// WorkerPool: threads for blocking work (runc calls take 20-50 ms), so the
// event loop never blocks. Results come back to the loop thread, which owns
// all shared state.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/event_loop.h"

namespace base {

class WorkerPool {
 public:
  WorkerPool(EventLoop& loop, int threads);
  ~WorkerPool();  // finishes queued jobs, then joins

  // Runs `work` on a worker, then `done(result)` on the loop thread.
  template <class T>
  void Run(std::function<T()> work, std::function<void(T)> done) {
    Submit([this, work = std::move(work), done = std::move(done)]() mutable {
      auto result = std::make_shared<T>(work());
      loop_.Post([done = std::move(done), result] { done(std::move(*result)); });
    });
  }

  void Submit(std::function<void()> job);

 private:
  void Worker();

  EventLoop& loop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace base
