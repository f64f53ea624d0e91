#include "simdex/rwlock.h"

#include <new>

#include <pthread.h>

namespace simdex {

// Every live RwLock, for the fork handlers. Leaked on purpose: locks may be destroyed
// during static destruction, after a function-local static would be gone.
struct RwLockRegistry {
  std::mutex mu;
  RwLock* head = nullptr;

  static RwLockRegistry& get() {
    static RwLockRegistry* r = [] {
      auto* reg = new RwLockRegistry();
      pthread_atfork(&RwLockRegistry::prepare, &RwLockRegistry::parent, &RwLockRegistry::child);
      return reg;
    }();
    return *r;
  }

  // Before fork: no writer may be inside any lock, and no thread may enter one, while
  // the address space is copied.
  static void prepare() {
    RwLockRegistry& r = get();
    r.mu.lock();
    for (RwLock* l = r.head; l != nullptr; l = l->next_) {
      std::unique_lock<std::mutex> lk(l->m_);
      l->readers_cv_.wait(lk, [l] { return !l->writer_; });
      lk.release();  // stays locked until parent() / child()
    }
  }

  static void parent() {
    RwLockRegistry& r = get();
    for (RwLock* l = r.head; l != nullptr; l = l->next_) l->m_.unlock();
    r.mu.unlock();
  }

  // Only the forking thread exists in the child: the readers and queued writers that
  // were other threads are gone. Fresh mutexes (the held ones belong to the parent's
  // bookkeeping) and counts of zero.
  static void child() {
    RwLockRegistry& r = get();
    for (RwLock* l = r.head; l != nullptr; l = l->next_) {
      new (&l->m_) std::mutex();
      new (&l->readers_cv_) std::condition_variable();
      new (&l->writers_cv_) std::condition_variable();
      l->readers_ = 0;
      l->readers_waiting_ = 0;
      l->admit_ = 0;
      l->writers_waiting_ = 0;
      l->writer_ = false;
    }
    new (&r.mu) std::mutex();
  }
};

RwLock::RwLock() {
  RwLockRegistry& r = RwLockRegistry::get();
  std::lock_guard<std::mutex> g(r.mu);
  next_ = r.head;
  if (r.head != nullptr) r.head->prev_ = this;
  r.head = this;
}

RwLock::~RwLock() {
  RwLockRegistry& r = RwLockRegistry::get();
  std::lock_guard<std::mutex> g(r.mu);
  if (prev_ != nullptr) prev_->next_ = next_;
  else r.head = next_;
  if (next_ != nullptr) next_->prev_ = prev_;
}

void RwLock::lock() {
  std::unique_lock<std::mutex> lk(m_);
  ++writers_waiting_;
  // Readers already inside finish; new readers queue behind us (lock_shared).
  writers_cv_.wait(lk, [this] { return !writer_ && readers_ == 0 && admit_ == 0; });
  --writers_waiting_;
  writer_ = true;
}

void RwLock::unlock() {
  {
    std::lock_guard<std::mutex> g(m_);
    writer_ = false;
    ++phase_;
    admit_ = readers_waiting_;  // the readers queued during this write go before the next writer
  }
  readers_cv_.notify_all();
  writers_cv_.notify_one();
}

void RwLock::lock_shared() {
  std::unique_lock<std::mutex> lk(m_);
  const std::uint64_t arrived = phase_;
  ++readers_waiting_;
  readers_cv_.wait(lk, [this, arrived] {
    return !writer_ && (writers_waiting_ == 0 || phase_ != arrived);
  });
  --readers_waiting_;
  if (phase_ != arrived && admit_ > 0) --admit_;
  ++readers_;
}

void RwLock::unlock_shared() {
  bool last;
  {
    std::lock_guard<std::mutex> g(m_);
    last = --readers_ == 0 && writers_waiting_ > 0 && admit_ == 0;
  }
  if (last) writers_cv_.notify_one();
}

}  // namespace simdex
