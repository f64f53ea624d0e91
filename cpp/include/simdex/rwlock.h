// RwLock: the readers-writer lock of the id-addressed stores (FlatIndex, LshIndex).
//
// std::shared_mutex on glibc prefers readers: under a steady stream of searches a
// write can wait for seconds. RwLock is phase-fair instead:
//  - a writer waits only for the readers already inside; readers arriving after it
//    queue behind it;
//  - readers that queued behind a writer go in as soon as that writer is done, even
//    if more writers are waiting, so writes cannot starve searches either.
// It meets the SharedMutex requirements used here (lock, unlock, lock_shared,
// unlock_shared), so std::unique_lock / std::shared_lock work with it. Not recursive:
// a thread holding it shared must not take it again (a writer may queue in between).
//
// Fork: every RwLock is registered. Before fork() the forking thread waits for the
// writer inside each lock (if any) to finish and holds every lock's internal mutex
// across the fork, so the child never sees a half-applied write; in the child the
// readers and writers that belonged to other threads are forgotten (those threads
// do not exist there), so the child can write as well as read.
//
// Example:
// @code
//   simdex::RwLock mu;
//   { std::shared_lock<simdex::RwLock> r(mu); /* read */ }
//   { std::unique_lock<simdex::RwLock> w(mu); /* write */ }
// @endcode
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace simdex {

class RwLock {
 public:
  RwLock();
  ~RwLock();
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock();
  void unlock();
  void lock_shared();
  void unlock_shared();

 private:
  friend struct RwLockRegistry;
  std::mutex m_;
  std::condition_variable readers_cv_, writers_cv_;
  std::int64_t readers_ = 0;          // readers inside
  std::int64_t readers_waiting_ = 0;  // readers queued
  std::int64_t admit_ = 0;            // queued readers still to let in before the next writer
  std::int64_t writers_waiting_ = 0;  // writers queued (not inside)
  std::uint64_t phase_ = 0;           // writes completed; readers queued in an older phase may pass
  bool writer_ = false;               // a writer is inside
  RwLock* prev_ = nullptr;            // registry links (fork handling)
  RwLock* next_ = nullptr;
};

}  // namespace simdex
