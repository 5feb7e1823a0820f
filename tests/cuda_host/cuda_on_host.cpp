// Test-only execution layer for the host build of rasterize.cu (see cuda_on_host.h): blocks of CUDA threads as
// fibers scheduled in adversarial orders, or as OS threads (for ThreadSanitizer).
//
// A fiber starts on its own stack through makecontext/setcontext and then switches with _setjmp/_longjmp, which
// skip swapcontext's signal-mask system calls (a backward launch switches millions of times). glibc's fortified
// longjmp would reject jumps between stacks.
#undef _FORTIFY_SOURCE
#include "cuda_on_host.h"

#include <setjmp.h>
#include <ucontext.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace cuda_host {

thread_local ThreadState* current = nullptr;

namespace {

Order g_order = Order::kRandom;
uint64_t g_seed = 0x5eed;
bool g_os_threads = false;
int g_workers = 0;  // 0: from CUDA_HOST_WORKERS or the number of cores (at most 4)

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string where(int line) { return "rasterize.cu:" + std::to_string(line); }

// Thrown on an OS thread of a failed block (never across a fiber).
struct Abort {};

// PTX shfl.sync.down with c = ((32 - width) << 8) | 0x1f, as CUDA's __shfl_down_sync passes it: the source lane
// lane + (delta & 31) when it lies in the caller's segment of `width` lanes, else the caller itself.
int shfl_down_source(int lane, unsigned delta, int width) {
  const int segmask = (kWarpSize - width) & 31;
  const int max_lane = (lane & segmask) | (31 & ~segmask);
  const int j = lane + static_cast<int>(delta & 31u);
  return j <= max_lane ? j : lane;
}

void check_width(int width, int line) {
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0)
    fail("__shfl_down_sync at " + where(line) + ": width " + std::to_string(width) +
         " is not a power of 2 in [1, 32]");
}

}  // namespace

class Block {
 public:
  explicit Block(int threads) : threads_(threads), arena_(kSharedLimit) {}
  virtual ~Block() = default;
  virtual void sync(int line) = 0;
  virtual uint64_t shfl(int line, unsigned mask, uint64_t bits, unsigned delta, int width) = 0;
  virtual void fail(const std::string& message) = 0;
  unsigned char* arena() { return arena_.data(); }
  void poison() { std::memset(arena_.data(), 0xff, arena_.size()); }

 protected:
  int threads_;
  std::vector<unsigned char> arena_;
  // the lanes of warp w that exist in a block of threads_ threads
  unsigned existing_lanes(int warp) const {
    const int n = std::min(kWarpSize, threads_ - warp * kWarpSize);
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
  }
};

void fail(const std::string& message) {
  if (current == nullptr || current->block == nullptr) throw std::runtime_error(message);
  current->block->fail(message);
  std::abort();  // not reached
}

void sync_threads(int line) { current->block->sync(line); }

uint64_t shfl_down_bits(int line, unsigned mask, uint64_t bits, unsigned delta, int width) {
  check_width(width, line);
  return current->block->shfl(line, mask, bits, delta, width);
}

void* shared_alloc(size_t bytes, size_t align) {
  size_t offset = (current->shared_cursor + align - 1) / align * align;
  if (offset + bytes > kSharedLimit)
    fail("shared memory of the block exceeds " + std::to_string(kSharedLimit) + " bytes");
  current->shared_cursor = offset + bytes;
  return current->block->arena() + offset;
}

void set_schedule(Order order, uint64_t seed) {
  g_order = order;
  g_seed = seed;
}
void set_os_threads(bool os_threads) { g_os_threads = os_threads; }
void set_workers(int workers) { g_workers = workers; }

namespace {

ThreadState make_state(dim3 grid, dim3 block, uint3 block_idx, int linear, Block* owner) {
  ThreadState s{};
  s.thread_idx = uint3{linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
  s.block_idx = block_idx;
  s.block_dim = block;
  s.grid_dim = grid;
  s.linear = linear;
  s.shared_cursor = 0;
  s.block = owner;
  return s;
}

uint3 block_index(dim3 grid, int64_t linear) {
  return uint3{static_cast<unsigned>(linear % grid.x), static_cast<unsigned>((linear / grid.x) % grid.y),
               static_cast<unsigned>(linear / (static_cast<int64_t>(grid.x) * grid.y))};
}

// ---------------------------------------------------------------------------------------------------------------
// Fibers: one OS thread runs all threads of a block, switching at __syncthreads and shuffles.

constexpr size_t kStackBytes = 64 * 1024;

class FiberBlock final : public Block {
 public:
  enum State { kRunnable, kAtSync, kAtShfl, kDone, kFailed };
  struct Fiber {
    ucontext_t ctx;  // the first entry
    jmp_buf jump;    // where a suspended fiber resumes
    bool started;
    ThreadState ts;
    State state;
    int line;
    unsigned mask, delta;
    int width;
    uint64_t value, result;
  };

  FiberBlock(dim3 grid, dim3 block, const std::function<void()>* body)
      : Block(static_cast<int>(block.x * block.y * block.z)),
        grid_(grid),
        block_(block),
        body_(body),
        fibers_(threads_),
        stacks_(new char[kStackBytes * threads_]) {}

  // Runs block `linear`; returns an error message, empty on success.
  std::string run(int64_t linear) {
    error_.clear();
    poison();
    const uint3 idx = block_index(grid_, linear);
    for (int t = 0; t < threads_; ++t) {
      Fiber& f = fibers_[t];
      f.ts = make_state(grid_, block_, idx, t, this);
      f.state = kRunnable;
      f.started = false;
    }
    std::vector<int> order(threads_);
    for (uint64_t pass = 0;; ++pass) {
      make_order(order, linear, pass);
      for (int t : order) {
        if (fibers_[t].state != kRunnable) continue;
        resume(t);
        if (!error_.empty()) return error_;
      }
      if (!release()) break;
    }
    return error_;
  }

  void sync(int line) override {
    Fiber& f = *running_;
    f.state = kAtSync;
    f.line = line;
    suspend(f);
  }

  uint64_t shfl(int line, unsigned mask, uint64_t bits, unsigned delta, int width) override {
    Fiber& f = *running_;
    f.state = kAtShfl;
    f.line = line;
    f.mask = mask;
    f.value = bits;
    f.delta = delta;
    f.width = width;
    suspend(f);
    return f.result;
  }

  [[noreturn]] void fail(const std::string& message) override {
    Fiber& f = *running_;
    if (error_.empty()) error_ = message;
    f.state = kFailed;
    _longjmp(scheduler_, 1);  // never resumed
  }

 private:
  static thread_local FiberBlock* self_;

  static void entry() {
    FiberBlock* b = self_;
    (*b->body_)();
    b->running_->state = kDone;
    _longjmp(b->scheduler_, 1);
  }

  void suspend(Fiber& f) {
    if (_setjmp(f.jump) == 0) _longjmp(scheduler_, 1);
  }

  void resume(int t) {
    Fiber& f = fibers_[t];
    running_ = &f;
    self_ = this;
    current = &f.ts;
    if (_setjmp(scheduler_) == 0) {
      if (f.started) _longjmp(f.jump, 1);
      f.started = true;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = stacks_.get() + kStackBytes * (&f - fibers_.data());
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, &FiberBlock::entry, 0);
      setcontext(&f.ctx);
    }
    current = nullptr;
    running_ = nullptr;
  }

  void make_order(std::vector<int>& order, int64_t block, uint64_t pass) const {
    for (int t = 0; t < threads_; ++t) order[t] = g_order == Order::kReverse ? threads_ - 1 - t : t;
    if (g_order != Order::kRandom) return;
    uint64_t state = splitmix(g_seed ^ splitmix(static_cast<uint64_t>(block) * 0x10001ull + pass));
    for (int t = threads_ - 1; t > 0; --t) {
      state = splitmix(state);
      std::swap(order[t], order[static_cast<int>(state % static_cast<uint64_t>(t + 1))]);
    }
  }

  std::string describe(int t) const {
    const Fiber& f = fibers_[t];
    std::ostringstream s;
    s << "thread " << t;
    if (f.state == kAtSync) s << " at __syncthreads (" << where(f.line) << ")";
    if (f.state == kAtShfl) s << " at __shfl_down_sync (" << where(f.line) << ")";
    if (f.state == kDone) s << " (exited)";
    return s.str();
  }

  // Releases the waiting threads whose barrier or shuffle is complete; false when every thread is done.
  bool release() {
    bool released = false, any_shfl = false, live = false;
    for (int w = 0; w * kWarpSize < threads_; ++w) {
      const int base = w * kWarpSize;
      int first = -1;
      for (int l = 0; l < kWarpSize && base + l < threads_; ++l)
        if (fibers_[base + l].state == kAtShfl) {
          first = base + l;
          break;
        }
      if (first < 0) continue;
      any_shfl = true;
      const unsigned mask = fibers_[first].mask;
      if (mask & ~existing_lanes(w)) {
        error_ = "__shfl_down_sync at " + where(fibers_[first].line) + ": the mask names lanes the block lacks";
        return false;
      }
      bool complete = true;
      for (int l = 0; l < kWarpSize; ++l) {
        if (!(mask >> l & 1u)) continue;
        const Fiber& f = fibers_[base + l];
        if (f.state == kDone) {
          error_ = "__shfl_down_sync at " + where(fibers_[first].line) + ": lane " + std::to_string(l) +
                   " of warp " + std::to_string(w) + " named in the mask has exited";
          return false;
        }
        if (f.state != kAtShfl) {
          complete = false;
          continue;
        }
        if (f.line != fibers_[first].line || f.mask != mask) {
          error_ = "warp " + std::to_string(w) + " diverged: " + describe(first) + ", " + describe(base + l) +
                   " (masks " + std::to_string(mask) + ", " + std::to_string(f.mask) + ")";
          return false;
        }
      }
      if (!complete) continue;
      for (int l = 0; l < kWarpSize; ++l) {
        if (!(mask >> l & 1u)) continue;
        Fiber& f = fibers_[base + l];
        const int src = shfl_down_source(l, f.delta, f.width);
        if (!(mask >> src & 1u)) {
          error_ = "__shfl_down_sync at " + where(f.line) + ": lane " + std::to_string(l) + " reads lane " +
                   std::to_string(src) + ", which is not in the mask";
          return false;
        }
        f.result = fibers_[base + src].value;
      }
      for (int l = 0; l < kWarpSize; ++l)
        if (mask >> l & 1u) fibers_[base + l].state = kRunnable;
      released = true;
    }
    if (released) return true;
    int at_sync = -1;
    for (int t = 0; t < threads_; ++t) {
      const Fiber& f = fibers_[t];
      if (f.state == kDone) continue;
      live = true;
      if (f.state == kAtSync) {
        if (at_sync >= 0 && f.line != fibers_[at_sync].line) {
          error_ = "__syncthreads reached at different places: " + describe(at_sync) + ", " + describe(t);
          return false;
        }
        at_sync = t;
      }
    }
    if (!live) return false;
    if (any_shfl || at_sync < 0) {
      std::string waiting;
      for (int t = 0; t < threads_ && waiting.size() < 400; ++t)
        if (fibers_[t].state == kAtShfl || (fibers_[t].state == kAtSync && any_shfl)) waiting += describe(t) + "; ";
      error_ = "deadlock: a shuffle waits for lanes held at __syncthreads or exited: " + waiting;
      return false;
    }
    // exited threads count as arrived, as on the hardware
    for (Fiber& f : fibers_)
      if (f.state == kAtSync) f.state = kRunnable;
    return true;
  }

  dim3 grid_, block_;
  const std::function<void()>* body_;
  std::vector<Fiber> fibers_;
  std::unique_ptr<char[]> stacks_;
  jmp_buf scheduler_;
  Fiber* running_ = nullptr;
  std::string error_;
};

thread_local FiberBlock* FiberBlock::self_ = nullptr;

// ---------------------------------------------------------------------------------------------------------------
// OS threads: one std::thread per CUDA thread, mutex/condition-variable barriers (what ThreadSanitizer models).

class ThreadBlock final : public Block {
 public:
  ThreadBlock(dim3 grid, dim3 block, const std::function<void()>* body)
      : Block(static_cast<int>(block.x * block.y * block.z)), grid_(grid), block_(block), body_(body),
        warps_((threads_ + kWarpSize - 1) / kWarpSize) {}

  std::string run(int64_t linear) {
    poison();
    error_.clear();
    const uint3 idx = block_index(grid_, linear);
    arrived_ = 0;
    exited_ = 0;
    generation_ = 0;
    for (Warp& w : warps_) w = Warp{};
    std::vector<ThreadState> states(threads_);
    std::vector<std::thread> threads;
    threads.reserve(threads_);
    for (int t = 0; t < threads_; ++t) {
      states[t] = make_state(grid_, block_, idx, t, this);
      threads.emplace_back([this, &states, t]() {
        current = &states[t];
        try {
          (*body_)();
        } catch (const Abort&) {
        }
        exit_thread(t);
        current = nullptr;
      });
    }
    for (std::thread& th : threads) th.join();
    return error_;
  }

  void sync(int line) override {
    std::unique_lock<std::mutex> lock(mutex_);
    check_aborted();
    if (arrived_ == 0) {
      sync_line_ = line;
    } else if (line != sync_line_) {
      abort_locked("__syncthreads reached at different places: " + where(sync_line_) + " and " + where(line));
    }
    ++arrived_;
    const uint64_t gen = generation_;
    if (arrived_ == threads_ - exited_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&]() { return generation_ != gen || !error_.empty(); });
    check_aborted();
  }

  uint64_t shfl(int line, unsigned mask, uint64_t bits, unsigned delta, int width) override {
    const int lane = current->linear % kWarpSize;
    const int w = current->linear / kWarpSize;
    Warp& warp = warps_[w];
    std::unique_lock<std::mutex> lock(mutex_);
    check_aborted();
    if (mask & ~existing_lanes(w)) abort_locked("__shfl_down_sync at " + where(line) + ": the mask names lanes the "
                                                "block lacks");
    if (mask & warp.exited)
      abort_locked("__shfl_down_sync at " + where(line) + ": a lane named in the mask has exited");
    if (warp.arrived == 0) {
      warp.mask = mask;
      warp.line = line;
    } else if (warp.mask != mask || warp.line != line) {
      abort_locked("warp " + std::to_string(w) + " diverged at __shfl_down_sync: " + where(warp.line) + " and " +
                   where(line));
    }
    warp.values[lane] = bits;
    warp.delta[lane] = delta;
    warp.width[lane] = width;
    warp.arrived |= 1u << lane;
    const uint64_t gen = warp.generation;
    if (warp.arrived == mask) {
      finish_shuffle(warp);
    } else {
      cv_.wait(lock, [&]() { return warp.generation != gen || !error_.empty(); });
      check_aborted();
    }
    return warp.results[lane];
  }

  [[noreturn]] void fail(const std::string& message) override {
    std::unique_lock<std::mutex> lock(mutex_);
    abort_locked(message);
  }

 private:
  struct Warp {
    unsigned arrived = 0, exited = 0, mask = 0;
    int line = 0;
    uint64_t generation = 0;
    uint64_t values[kWarpSize] = {}, results[kWarpSize] = {};
    unsigned delta[kWarpSize] = {};
    int width[kWarpSize] = {};
  };

  void finish_shuffle(Warp& warp) {
    for (int l = 0; l < kWarpSize; ++l) {
      if (!(warp.mask >> l & 1u)) continue;
      const int src = shfl_down_source(l, warp.delta[l], warp.width[l]);
      if (!(warp.mask >> src & 1u))
        abort_locked("__shfl_down_sync at " + where(warp.line) + ": lane " + std::to_string(l) + " reads lane " +
                     std::to_string(src) + ", which is not in the mask");
      warp.results[l] = warp.values[src];
    }
    warp.arrived = 0;
    ++warp.generation;
    cv_.notify_all();
  }

  void exit_thread(int t) {
    std::unique_lock<std::mutex> lock(mutex_);
    ++exited_;
    Warp& warp = warps_[t / kWarpSize];
    warp.exited |= 1u << (t % kWarpSize);
    if (error_.empty() && warp.arrived && (warp.mask >> (t % kWarpSize) & 1u)) {
      error_ = "__shfl_down_sync at " + where(warp.line) + ": a lane named in the mask has exited";
      cv_.notify_all();
      return;
    }
    if (arrived_ > 0 && arrived_ == threads_ - exited_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    }
  }

  void check_aborted() {
    if (!error_.empty()) throw Abort{};
  }

  [[noreturn]] void abort_locked(const std::string& message) {
    if (error_.empty()) error_ = message;
    cv_.notify_all();
    throw Abort{};
  }

  dim3 grid_, block_;
  const std::function<void()>* body_;
  std::vector<Warp> warps_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0, exited_ = 0, sync_line_ = 0;
  uint64_t generation_ = 0;
  std::string error_;
};

int worker_count(int64_t blocks) {
  int n = g_workers;
  if (n <= 0) {
    const char* env = std::getenv("CUDA_HOST_WORKERS");
    n = env ? std::atoi(env) : static_cast<int>(std::min(4u, std::max(1u, std::thread::hardware_concurrency())));
  }
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, blocks)));
}

}  // namespace

void launch(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
  const int64_t blocks = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  const int64_t threads = static_cast<int64_t>(block.x) * block.y * block.z;
  if (threads < 1 || threads > 1024 || block.z > 64) throw std::runtime_error(std::string(kernel) + ": bad block size");
  if (grid.y > 65535 || grid.z > 65535) throw std::runtime_error(std::string(kernel) + ": grid.y/z over 65535");
  if (blocks == 0) return;
  std::string error;
  if (g_os_threads) {
    ThreadBlock runner(grid, block, &body);
    for (int64_t b = 0; b < blocks && error.empty(); ++b) error = runner.run(b);
  } else {
    std::atomic<int64_t> next{0};
    std::mutex error_mutex;
    auto work = [&]() {
      FiberBlock runner(grid, block, &body);
      for (int64_t b = next++; b < blocks; b = next++) {
        std::string e = runner.run(b);
        if (!e.empty()) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (error.empty()) error = "block " + std::to_string(b) + ": " + e;
          next = blocks;
        }
      }
    };
    const int workers = worker_count(blocks);
    std::vector<std::thread> pool;
    for (int w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (std::thread& th : pool) th.join();
  }
  if (!error.empty()) throw std::runtime_error(std::string("cuda_host: ") + kernel + ": " + error);
}

}  // namespace cuda_host
