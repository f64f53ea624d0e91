// simdex CUDA emulator: runs a kernel's threads as fibers (see simdex_emu/prelude.h).
//
// One fiber per CUDA thread, all on the calling OS thread. A fiber runs until it
// reaches a barrier or ends; then the scheduler decides which barriers can release.
// The context switch is a few instructions of x86-64 assembly (callee-saved
// registers, MXCSR and the x87 control word); other architectures use ucontext.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "simdex_emu/prelude.h"

// Bounds of the section holding every emulated __shared__ variable (the linker defines
// them; weak so that a program without shared variables links too).
extern "C" unsigned char __start_simdex_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_simdex_emu_shared[] __attribute__((weak));

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

#if defined(__x86_64__)
extern "C" void simdex_emu_switch(void** save_sp, void* new_sp);
extern "C" void simdex_emu_trampoline();
// simdex_emu_switch(save, next): push the callee-saved state, store rsp in *save,
// load next, pop its state and return into it. A new fiber's stack is laid out so
// that this "returns" into simdex_emu_trampoline with r12 = argument, r13 = entry.
asm(R"(
  .text
  .p2align 4
  .globl simdex_emu_switch
  .type simdex_emu_switch, @function
simdex_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr (%rsp)
  fnstcw 8(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simdex_emu_switch, .-simdex_emu_switch

  .p2align 4
  .globl simdex_emu_trampoline
  .type simdex_emu_trampoline, @function
simdex_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size simdex_emu_trampoline, .-simdex_emu_trampoline
)");
#else
#include <ucontext.h>
#endif

namespace simdex_emu {

namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

enum class St { kRunnable, kAtBlock, kAtWarp, kDone };

struct Fiber {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  unsigned char* stack = nullptr;  // the mapping: one guard page, then the stack
  uint3 tid;
  int linear = 0;
  St st = St::kDone;
  BlockOp bop = kSyncOnly;
  const char* bfile = nullptr;  // the __syncthreads source line
  int bline = 0;
  int bpred = 0;
  int bresult = 0;
  WarpOp wop = kSyncWarp;
  unsigned wmask = 0;
  std::uint64_t wval = 0;
  int warg = 0;
  int wwidth = 32;
  std::uint64_t wresult = 0;
};

struct Engine {
  Fiber fibers[kMaxThreads];
  int n = 0;
  Fiber* current = nullptr;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_ctx;
#endif
  const std::function<void()>* body = nullptr;
  std::string error;
  unsigned char* smem = nullptr;
  std::size_t smem_cap = 0;
  std::uint64_t launches = 0;
  std::int64_t blocks = 0;
  std::int64_t threads = 0;
};

Engine& engine() {
  static Engine* e = new Engine();  // never destroyed: fibers' stacks stay mapped
  return *e;
}

std::mutex& engine_mutex() {
  static std::mutex m;
  return m;
}

void fiber_entry(Fiber* f) {
  (*engine().body)();
  f->st = St::kDone;
#if defined(__x86_64__)
  simdex_emu_switch(&f->sp, engine().sched_sp);
#else
  swapcontext(&f->ctx, &engine().sched_ctx);
#endif
  std::abort();  // a finished fiber is never resumed
}

#if !defined(__x86_64__)
void fiber_entry_uc(unsigned lo, unsigned hi) {
  fiber_entry(reinterpret_cast<Fiber*>((static_cast<std::uintptr_t>(hi) << 32) | lo));
}
#endif

void start_fiber(Fiber& f) {
  if (f.stack == nullptr) {
    void* m = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "simdex-emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(m, static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow -> SIGSEGV
    f.stack = static_cast<unsigned char*>(m);
  }
#if defined(__x86_64__)
  auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStackBytes) & ~std::uintptr_t{15};
  auto* sp = reinterpret_cast<std::uint64_t*>(top - 16 - 72);
  sp[0] = 0x1F80;  // MXCSR: all exceptions masked, round to nearest
  sp[1] = 0x037F;  // x87 control word
  sp[2] = 0;       // r15
  sp[3] = 0;       // r14
  sp[4] = reinterpret_cast<std::uint64_t>(&fiber_entry);  // r13
  sp[5] = reinterpret_cast<std::uint64_t>(&f);            // r12
  sp[6] = 0;                                              // rbx
  sp[7] = 0;                                              // rbp
  sp[8] = reinterpret_cast<std::uint64_t>(&simdex_emu_trampoline);
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack + sysconf(_SC_PAGESIZE);
  f.ctx.uc_stack.ss_size = kStackBytes - static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  f.ctx.uc_link = nullptr;
  const auto v = reinterpret_cast<std::uintptr_t>(&f);
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry_uc), 2, static_cast<unsigned>(v),
              static_cast<unsigned>(v >> 32));
#endif
  f.st = St::kRunnable;
}

void resume(Engine& e, Fiber& f) {
  e.current = &f;
  threadIdx = f.tid;
#if defined(__x86_64__)
  simdex_emu_switch(&e.sched_sp, f.sp);
#else
  swapcontext(&e.sched_ctx, &f.ctx);
#endif
  e.current = nullptr;
}

void yield(Engine& e) {
  Fiber* f = e.current;
#if defined(__x86_64__)
  simdex_emu_switch(&f->sp, e.sched_sp);
#else
  swapcontext(&f->ctx, &e.sched_ctx);
#endif
}

Fiber& current_fiber(const char* what) {
  Engine& e = engine();
  if (e.current == nullptr) {
    std::fprintf(stderr, "simdex-emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *e.current;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case kSyncWarp: return "__syncwarp";
    case kShflIdx: return "__shfl_sync";
    case kShflXor: return "__shfl_xor_sync";
    case kBallot: return "__ballot_sync";
  }
  return "?";
}

// Release the lanes of warp w whose collective can complete. Returns true if any did;
// sets e.error for an invalid collective.
bool release_warp(Engine& e, int w) {
  const int base = w * 32;
  const int lanes = std::min(32, e.n - base);
  bool released = false;
  for (int l = 0; l < lanes; ++l) {
    Fiber& f = e.fibers[base + l];
    if (f.st != St::kAtWarp) continue;
    const unsigned m = f.wmask;
    std::ostringstream err;
    if (((m >> l) & 1u) == 0) err << op_name(f.wop) << ": lane " << l << " is not in its own mask";
    bool complete = err.str().empty();
    for (int j = 0; j < 32 && err.str().empty(); ++j) {
      if (((m >> j) & 1u) == 0) continue;
      if (j >= lanes) {
        err << op_name(f.wop) << ": mask names lane " << j << " but the warp has " << lanes << " threads";
        break;
      }
      const Fiber& g = e.fibers[base + j];
      if (g.st == St::kDone) {
        err << op_name(f.wop) << ": mask names lane " << j << ", which has exited";
      } else if (g.st == St::kAtWarp && (g.wmask != m || g.wop != f.wop || g.wwidth != f.wwidth)) {
        err << "warp " << w << ": lane " << l << " is in " << op_name(f.wop) << " (mask 0x" << std::hex << m
            << ") while lane " << std::dec << j << " is in " << op_name(g.wop) << " (mask 0x" << std::hex
            << g.wmask << ")";
      } else if (g.st != St::kAtWarp) {
        complete = false;
      }
    }
    if (!err.str().empty()) {
      e.error = err.str();
      return false;
    }
    if (!complete) continue;
    const int width = f.wwidth;
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
      e.error = std::string(op_name(f.wop)) + ": width must be a power of two <= 32";
      return false;
    }
    std::uint64_t vote = 0;
    for (int j = 0; j < 32; ++j)
      if ((m >> j) & 1u) vote |= (e.fibers[base + j].wval != 0 ? 1ull : 0ull) << j;
    for (int j = 0; j < 32; ++j) {
      if (((m >> j) & 1u) == 0) continue;
      Fiber& g = e.fibers[base + j];
      const int seg = j & ~(width - 1);
      int src = j;
      switch (g.wop) {
        case kShflIdx: src = seg + (g.warg & (width - 1)); break;
        case kShflXor: src = j ^ g.warg; if (src < seg || src >= seg + width) src = j; break;
        default: break;
      }
      if (g.wop == kShflIdx || g.wop == kShflXor) {
        if (src < 0 || src >= 32 || ((m >> src) & 1u) == 0) {
          std::ostringstream s;
          s << op_name(g.wop) << ": lane " << j << " reads lane " << src << ", which is not in the mask";
          e.error = s.str();
          return false;
        }
        g.wresult = e.fibers[base + src].wval;
      } else if (g.wop == kBallot) {
        g.wresult = vote;
      }
      g.st = St::kRunnable;
    }
    released = true;
  }
  return released;
}

std::string describe(const Engine& e) {
  int at_block = 0, at_warp = 0, done = 0;
  for (int i = 0; i < e.n; ++i) {
    at_block += e.fibers[i].st == St::kAtBlock;
    at_warp += e.fibers[i].st == St::kAtWarp;
    done += e.fibers[i].st == St::kDone;
  }
  std::ostringstream s;
  s << "deadlock: " << at_block << " threads wait in __syncthreads, " << at_warp
    << " in warp collectives, " << done << " have exited";
  return s.str();
}

// Run one block to completion; false (with e.error) on failure.
bool run_block(Engine& e, const dim3& block) {
  for (int i = 0; i < e.n; ++i) {
    Fiber& f = e.fibers[i];
    f.linear = i;
    f.tid.x = static_cast<unsigned>(i) % block.x;
    f.tid.y = (static_cast<unsigned>(i) / block.x) % block.y;
    f.tid.z = static_cast<unsigned>(i) / (block.x * block.y);
    start_fiber(f);
  }
  const int warps = (e.n + 31) / 32;
  for (unsigned round = 0;; ++round) {
    // Warps progress independently: each runs (its lanes round robin, its collectives
    // released as soon as complete) until all its threads wait at the block barrier
    // or have exited, one warp after another, in alternating order.
    const bool ascending = (round & 1u) == 0;
    for (int wi = 0; wi < warps; ++wi) {
      const int w = ascending ? wi : warps - 1 - wi;
      const int lanes = std::min(32, e.n - w * 32);
      for (unsigned pass = 0;; ++pass) {
        const bool up = ((round + pass) & 1u) == 0;
        for (int j = 0; j < lanes; ++j) {
          Fiber& f = e.fibers[w * 32 + (up ? j : lanes - 1 - j)];
          if (f.st != St::kRunnable) continue;
          resume(e, f);
        }
        const bool released = release_warp(e, w);
        if (!e.error.empty()) return false;
        if (!released) break;
      }
    }
    int alive = 0, at_block = 0;
    for (int i = 0; i < e.n; ++i) {
      alive += e.fibers[i].st != St::kDone;
      at_block += e.fibers[i].st == St::kAtBlock;
    }
    if (alive == 0) return true;
    if (at_block == alive && alive < e.n) {  // the guide: undefined, may hang on a GPU
      std::ostringstream s;
      s << "divergent __syncthreads: " << at_block << " threads wait in it after " << e.n - alive
        << " threads of the block exited";
      e.error = s.str();
      return false;
    }
    if (at_block == alive) {
      const Fiber& f0 = e.fibers[0];
      for (int i = 1; i < e.n; ++i) {
        const Fiber& f = e.fibers[i];
        if (f.bline != f0.bline || f.bop != f0.bop || std::strcmp(f.bfile, f0.bfile) != 0) {
          std::ostringstream s;
          s << "divergent __syncthreads: thread " << i << " waits at " << f.bfile << ":" << f.bline
            << ", thread 0 at " << f0.bfile << ":" << f0.bline;
          e.error = s.str();
          return false;
        }
      }
    }
    if (at_block == alive) {
      int any = 0;
      for (int i = 0; i < e.n; ++i) any |= e.fibers[i].bpred != 0;
      for (int i = 0; i < e.n; ++i) {
        Fiber& f = e.fibers[i];
        if (f.st != St::kAtBlock) continue;
        f.bresult = f.bop == kSyncOr ? any : 0;
        f.st = St::kRunnable;
      }
      continue;
    }
    // Every warp is blocked: unless the block barrier released, nothing can move.
    e.error = describe(e);
    return false;
  }
}

}  // namespace

int block_barrier_op(BlockOp op, int predicate, const char* file, int line) {
  Fiber& f = current_fiber("__syncthreads");
  f.bop = op;
  f.bpred = predicate;
  f.bfile = file;
  f.bline = line;
  f.st = St::kAtBlock;
  yield(engine());
  return f.bresult;
}

std::uint64_t warp_collective(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width) {
  Fiber& f = current_fiber(op_name(op));
  f.wop = op;
  f.wmask = mask;
  f.wval = value;
  f.warg = arg;
  f.wwidth = width;
  f.st = St::kAtWarp;
  yield(engine());
  return f.wresult;
}

unsigned char* dynamic_shared_base() { return engine().smem; }

std::int64_t device_bytes_in_use();  // runtime.cpp

Stats stats() {
  std::lock_guard<std::mutex> lock(engine_mutex());
  const Engine& e = engine();
  return Stats{static_cast<std::int64_t>(e.launches), e.blocks, e.threads, device_bytes_in_use()};
}

cudaError_t run_kernel(const char* name, const LaunchConfig& cfg, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(engine_mutex());
  Engine& e = engine();
  e.n = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  e.body = &body;
  e.error.clear();
  if (cfg.smem > e.smem_cap) {
    std::free(e.smem);
    e.smem_cap = (cfg.smem + 255) / 256 * 256;
    e.smem = static_cast<unsigned char*>(std::aligned_alloc(256, e.smem_cap));
  }
  blockDim = cfg.block;
  gridDim = cfg.grid;
  const std::uint64_t nblocks = std::uint64_t{cfg.grid.x} * cfg.grid.y * cfg.grid.z;
  const bool reverse = (e.launches++ & 1u) != 0;  // alternate the block order between launches
  e.blocks += static_cast<std::int64_t>(nblocks);
  e.threads += static_cast<std::int64_t>(nblocks) * e.n;
  for (std::uint64_t i = 0; i < nblocks; ++i) {
    const std::uint64_t b = reverse ? nblocks - 1 - i : i;
    blockIdx.x = static_cast<unsigned>(b % cfg.grid.x);
    blockIdx.y = static_cast<unsigned>((b / cfg.grid.x) % cfg.grid.y);
    blockIdx.z = static_cast<unsigned>(b / (std::uint64_t{cfg.grid.x} * cfg.grid.y));
    if (cfg.smem > 0) std::memset(e.smem, 0xFF, cfg.smem);
    if (__start_simdex_emu_shared != nullptr)
      std::memset(__start_simdex_emu_shared, 0xFF,
                  static_cast<std::size_t>(__stop_simdex_emu_shared - __start_simdex_emu_shared));
    if (!run_block(e, cfg.block)) {
      std::fprintf(stderr, "simdex-emu: kernel %s, block (%u,%u,%u) of (%u,%u,%u), %d threads: %s\n", name,
                   blockIdx.x, blockIdx.y, blockIdx.z, cfg.grid.x, cfg.grid.y, cfg.grid.z, e.n, e.error.c_str());
      return cudaErrorLaunchFailure;
    }
  }
  return cudaSuccess;
}

}  // namespace simdex_emu
