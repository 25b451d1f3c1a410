// nettally native addon: libbpf load/attach of the skeleton, a ring-buffer drain thread handing batches of packed
// records (bpf/nettally.h) to JS in one ThreadSafeFunction call per batch, and map reads for snapshots.
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <linux/capability.h>
#include <mntent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nettally.h"
#include "nettally.skel.h"
#include "system.h"

namespace {

using ntsys::CheckKernel;
using ntsys::Exec;
using ntsys::Cgroup2Root;
using ntsys::ClockNs;
using ntsys::LibbpfPrint;
using ntsys::MkdirAll;
using ntsys::TakeLog;
using ntsys::ThrowCoded;

constexpr int kBatchFull = -100000;      // sample callback's "stop, hand this batch over" signal
// One JS call carries at most about kBatchBytes (~1,800 connection records), and at most kQueuedBatches calls wait
// for JS. Together they bound what is in user space beyond what JS counts (producer/capture.ts pauses the drain by
// records it has decoded): 64 batches of 1 MiB let up to ~470k records (~150 MiB once decoded) arrive after a pause
// under connection churn; 4 of 256 KiB let ~7k. The kernel's ring buffer (--ring-buffer-bytes) is the buffer.
constexpr size_t kBatchBytes = 256 << 10;
constexpr size_t kQueuedBatches = 4;
// After a poll found records, how long the drain thread lets more arrive before handing the batch to JS.
constexpr int kCoalesceMs = 10;
// Loads of the BPF object before giving up on EAGAIN (signals during the verifier; see the constructor).
constexpr int kLoadAttempts = 4;


class Capture : public Napi::ObjectWrap<Capture> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Capture",
                       {
                           InstanceMethod("stats", &Capture::Stats),
                           InstanceMethod("connsChunk", &Capture::ConnsChunk),
                           InstanceMethod("ifaces", &Capture::Ifaces),
                           InstanceMethod("forget", &Capture::Forget),
                           InstanceMethod("refresh", &Capture::Refresh),
                           InstanceMethod("refreshAsync", &Capture::RefreshAsync),
                           InstanceMethod("close", &Capture::Close),
                           InstanceMethod("programs", &Capture::Programs),
                           InstanceMethod("pause", &Capture::Pause),
                           InstanceAccessor("warnings", &Capture::Warnings, nullptr),
                       });
  }

  // new Capture({ flushIntervalNs, flushThresholdBytes, ringBufferBytes, maxConnections, pinDir, naive, hooksOnly, onBatch, onClosed })
  explicit Capture(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Capture>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "Capture(options) needs an object");
    Napi::Object o = info[0].As<Napi::Object>();
    if (!o.Get("onBatch").IsFunction() || !o.Get("onClosed").IsFunction()) {
      throw Napi::TypeError::New(env, "Capture(options): onBatch and onClosed must be functions");
    }
    // Every setting is passed explicitly (defaults: producer/capture-options.ts), so none here can disagree.
    auto num = [&](const char *k) {
      Napi::Value v = o.Get(k);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("Capture(options): ") + k + " must be a number");
      return v.As<Napi::Number>().DoubleValue();
    };
    on_closed_ = Napi::Persistent(o.Get("onClosed").As<Napi::Function>());
    libbpf_set_print(LibbpfPrint);
    CheckKernel(env);
    TakeLog();

    // CONFIG_HZ (jiffies-based flush ages) comes from the kernel's config; without a readable config libbpf would
    // refuse to load, so declare it unknown and the programs fall back to ktime.
    struct utsname uts;
    uname(&uts);
    std::string boot_config = std::string("/boot/config-") + uts.release;
    LIBBPF_OPTS(bpf_object_open_opts, open_opts);
    if (access(boot_config.c_str(), R_OK) != 0 && access("/proc/config.gz", R_OK) != 0) open_opts.kconfig = "CONFIG_HZ=0\n";
    // A load can fail with EAGAIN when signals keep arriving during the verifier (a CPU profiler's SIGPROF every
    // few hundred µs: `node --cpu-prof`). Load() blocks signals, which is enough; should EAGAIN still come, the
    // object is opened and loaded again (libbpf loads an object only once), a few times, then the error says why.
    for (int attempt = 1;; attempt++) {
      skel_ = nettally__open_opts(&open_opts);
      if (!skel_) ThrowCoded(env, "KERNEL_UNSUPPORTED", std::string("failed to open BPF object: ") + strerror(errno));
      try {
        warnings_.clear();
        Setup(env, o, num);
        int err = Load();
        if (err == -EAGAIN && attempt < kLoadAttempts) {
          Destroy();
          continue;
        }
        if (err) ThrowLoad(env, err, attempt, o.Get("pinDir").IsString());
        Attach(env);
      } catch (...) {
        Destroy();
        throw;
      }
      break;
    }
    // Batches are delivered on the JS thread; the finalizer runs once the drain thread has released the TSFN.
    tsfn_ = Napi::ThreadSafeFunction::New(env, o.Get("onBatch").As<Napi::Function>(), "nettally-drain", kQueuedBatches, 1, this,
                                          [](Napi::Env env, Capture *self) { self->Finalize(env); });
    thread_ = std::thread([this] { Drain(); });
    Ref();  // kept alive until the finalizer: the drain thread and the TSFN point at this object
  }

  ~Capture() override {
    // Only reached after close() finished (the TSFN holds a reference to the JS object until then) or never started.
    if (thread_.joinable()) thread_.join();
    Destroy();
  }

 private:
  template <typename Num>
  void Setup(Napi::Env env, Napi::Object o, Num num) {
    skel_->rodata->flush_interval_ns = (__u64)num("flushIntervalNs");
    skel_->rodata->flush_threshold_bytes = (__u64)num("flushThresholdBytes");
    // the TCP hot path looks at a connection every 2^gate_shift bytes per direction: about a quarter of the threshold
    __u8 shift = 0;
    while (shift < 30 && (2ULL << shift) <= skel_->rodata->flush_threshold_bytes / 4) shift++;
    skel_->rodata->gate_shift = shift;
    skel_->rodata->naive = o.Get("naive").ToBoolean().Value() ? 1 : 0;
    skel_->rodata->hooks_only = o.Get("hooksOnly").ToBoolean().Value() ? 1 : 0;
    int err = bpf_map__set_max_entries(skel_->maps.events, (__u32)num("ringBufferBytes"));
    if (err) ThrowCoded(env, "CONFIG_INVALID", std::string("invalid ring buffer size: ") + strerror(-err));
    err = bpf_map__set_max_entries(skel_->maps.conns, (__u32)num("maxConnections"));
    if (err) ThrowCoded(env, "CONFIG_INVALID", std::string("invalid connection map size: ") + strerror(-err));

    Napi::Value pin = o.Get("pinDir");
    if (pin.IsString()) {
      std::string dir = pin.As<Napi::String>().Utf8Value();
      err = MkdirAll(dir);
      if (err) ThrowCoded(env, "CONFIG_INVALID", "cannot create pin directory " + dir + ": " + strerror(-err));
      struct bpf_map *maps[] = {skel_->maps.conns, skel_->maps.ifaces, skel_->maps.iface_slots, skel_->maps.stats,
                                skel_->maps.listeners};
      for (struct bpf_map *m : maps) {
        std::string path = dir + "/" + bpf_map__name(m);
        bpf_map__set_pin_path(m, path.c_str());
      }
    }

    // Counting per packet (cgroup_skb on the cgroup2 root) is the default; per syscall (sock_send_length /
    // sock_recv_length, ~5% of throughput at 64 B writes for the tracepoints alone) only without cgroup2, and for the
    // benchmark's naive mode (one record per call) and hooks mode (the syscall programs attached, returning at once).
    cgroup_root_ = Cgroup2Root();
    bool naive = skel_->rodata->naive, hooks_only = skel_->rodata->hooks_only;
    bool per_packet = !cgroup_root_.empty() && !naive;
    bool per_syscall = !per_packet || hooks_only;
    bpf_program__set_autoload(skel_->progs.nt_send, per_syscall);
    bpf_program__set_autoload(skel_->progs.nt_recv, per_syscall);
    bpf_program__set_autoload(skel_->progs.nt_pkt_in, per_packet);
    bpf_program__set_autoload(skel_->progs.nt_pkt_out, per_packet);
    bpf_program__set_autoload(skel_->progs.nt_udp_drop, per_packet);
    bpf_program__set_autoload(skel_->progs.nt_sock_release, !cgroup_root_.empty());
    if (cgroup_root_.empty()) {
      warnings_.push_back(
          "no cgroup2 mount: counting falls back to per-syscall tracepoints (~5% of throughput at small writes), and "
          "UDP sockets get no close record (they stay tracked until snapshot)");
    }

  }

  // nettally__load with every signal blocked on this thread: a pending signal makes the verifier stop with EAGAIN,
  // and a blocked one stays pending (delivered right after) instead. Loading takes milliseconds.
  int Load() {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = nettally__load(skel_);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return err;
  }

  [[noreturn]] void ThrowLoad(Napi::Env env, int err, int attempts, bool pinned) {
    std::string log = TakeLog();
    if (log.size() > 3000) log = "..." + log.substr(log.size() - 3000);
    bool perm = err == -EPERM || err == -EACCES;
    std::string why = err == -EAGAIN ? " (the verifier was interrupted " + std::to_string(attempts) +
                                           " times in a row; start again, without a profiler or tracer signalling the process)"
                      : pinned      ? " (a pinned map from an incompatible version? remove the pin directory)"
                                    : "";
    ThrowCoded(env, perm ? "PRIVILEGES" : "KERNEL_UNSUPPORTED",
               std::string("failed to load BPF programs: ") + strerror(-err) + why + (log.empty() ? "" : "\nlibbpf: " + log));
  }

  void Attach(Napi::Env env) {
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, skel_->obj) {
      const char *name = bpf_program__name(prog);
      struct bpf_link *link = nullptr;
      if (!bpf_program__autoload(prog)) continue;
      if (strncmp(bpf_program__section_name(prog), "cgroup", 6) == 0) {
        const std::string &root = cgroup_root_;
        int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY);
        if (fd < 0) ThrowCoded(env, "KERNEL_UNSUPPORTED", "cannot open cgroup2 root " + root + ": " + strerror(errno));
        link = bpf_program__attach_cgroup(prog, fd);
        int e = errno;
        close(fd);
        errno = e;
      } else if (strcmp(name, "nt_refresh") == 0) {
        // an iterator over every process's open files; user space runs it (Refresh), the kernel never calls it
        link = bpf_program__attach_iter(prog, nullptr);
        refresh_link_ = link;
      } else {
        link = bpf_program__attach(prog);
      }
      if (!link) {
        int e = errno;
        ThrowCoded(env, e == EPERM || e == EACCES ? "PRIVILEGES" : "KERNEL_UNSUPPORTED",
                   std::string("failed to attach ") + name + ": " + strerror(e));
      }
      links_.push_back(link);
    }

    rb_ = ring_buffer__new(bpf_map__fd(skel_->maps.events), &Capture::OnSample, this, nullptr);
    if (!rb_) ThrowCoded(env, "KERNEL_UNSUPPORTED", std::string("failed to open the ring buffer: ") + strerror(errno));
    ncpus_ = libbpf_num_possible_cpus();
    if (ncpus_ <= 0) ncpus_ = 1;
  }

  static int OnSample(void *ctx, void *data, size_t size) {
    Capture *self = static_cast<Capture *>(ctx);
    const uint8_t *p = static_cast<const uint8_t *>(data);
    self->batch_.insert(self->batch_.end(), p, p + size);
    return self->batch_.size() >= kBatchBytes ? kBatchFull : 0;
  }

  void Drain() {
    while (!stop_.load()) {
      if (paused_.load()) {
        // JS is far behind: leave the records in the ring buffer (when it fills, the kernel counts drops and the
        // cumulative counters carry the bytes)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      int n = ring_buffer__poll(rb_, 100);
      if (n < 0 && n != -EINTR && n != kBatchFull) {
        // nothing sensible to do on this thread; the records stay counted in the kernel's cumulative counters
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      } else if (n > 0 && batch_.size() < kBatchBytes) {
        // A poll wakes on the first record: under connection churn that handed JS a batch of a few records thousands
        // of times a second, and each batch costs a JS call, an ingest round, a spool write and an fsync. Waiting a
        // little lets a batch fill (at 40k records/s ~60 KB in kCoalesceMs; the ring buffer holds far more).
        std::this_thread::sleep_for(std::chrono::milliseconds(kCoalesceMs));
        if (!stop_.load()) ring_buffer__consume(rb_);
      }
      Hand();
    }
    while (ring_buffer__consume(rb_) == kBatchFull) Hand();
    Hand();
    tsfn_.Release();
  }

  // One JS call per batch; blocks when JS is kQueuedBatches behind, so the ring buffer fills and the kernel counts drops.
  void Hand() {
    if (batch_.empty()) return;
    auto *b = new std::vector<uint8_t>(std::move(batch_));
    batch_ = std::vector<uint8_t>();
    batch_.reserve(64 * 1024);
    napi_status s = tsfn_.BlockingCall(b, [](Napi::Env env, Napi::Function cb, std::vector<uint8_t> *b) {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, b->size());
      memcpy(ab.Data(), b->data(), b->size());
      delete b;
      try {
        cb.Call({ab});
      } catch (const Napi::Error &e) {
        e.ThrowAsJavaScriptException();
      }
    });
    if (s != napi_ok) delete b;
  }

  void Finalize(Napi::Env env) {
    if (thread_.joinable()) thread_.join();
    Destroy();
    if (!on_closed_.IsEmpty()) {
      Napi::HandleScope scope(env);
      try {
        on_closed_.Call({});
      } catch (const Napi::Error &e) {
        e.ThrowAsJavaScriptException();
      }
      on_closed_.Reset();
    }
    Unref();
  }

  void Destroy() {
    for (struct bpf_link *l : links_) bpf_link__destroy(l);
    links_.clear();
    refresh_link_ = nullptr;
    if (rb_) ring_buffer__free(rb_);
    rb_ = nullptr;
    if (skel_) nettally__destroy(skel_);
    skel_ = nullptr;
  }

  void Live(Napi::Env env) {
    if (!skel_) ThrowCoded(env, "INTERNAL", "the capture is closed");
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    Napi::Array out = Napi::Array::New(env, NT_STAT_MAX);
    std::vector<__u64> vals(ncpus_);
    for (__u32 i = 0; i < NT_STAT_MAX; i++) {
      __u64 sum = 0;
      if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.stats), &i, vals.data()) == 0) {
        for (__u64 v : vals) sum += v;
      }
      out.Set(i, Napi::Number::New(env, (double)sum));
    }
    return out;
  }

  // Packed struct nt_iface_entry per (netns, ifindex): the per-CPU values of the `iface_slots` array (each CPU's
  // slot has its own owner) and of the `ifaces` hash (interfaces whose slot another one owns), summed per key.
  // One chunk of the connection map into JS's buffer: connsChunk(dst: ArrayBuffer, cursor: Float64Array(2)) writes
  // up to dst.byteLength / sizeof(struct nt_conn) values with one bpf(BPF_MAP_LOOKUP_BATCH) and returns how many.
  // cursor = [bucket token, state]: state 0 starts a walk, 1 continues it, 2 means the walk is done. A walk in
  // chunks keeps the user-space copy bounded (conns() copied the whole map twice: 1M entries = 2 × 192 MiB) and
  // takes one syscall per chunk instead of two per entry (get_next_key + lookup). Entries added or deleted meanwhile
  // may be missed or seen once (the kernel walks bucket by bucket); get_next_key restarted from the first key when
  // its previous key had been deleted.
  Napi::Value ConnsChunk(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    if (info.Length() < 2 || !info[0].IsArrayBuffer() || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || info[1].As<Napi::Float64Array>().ElementLength() < 2) {
      throw Napi::TypeError::New(env, "connsChunk(dst, cursor) needs an ArrayBuffer and a Float64Array(2)");
    }
    Napi::ArrayBuffer dst = info[0].As<Napi::ArrayBuffer>();
    Napi::Float64Array cursor = info[1].As<Napi::Float64Array>();
    __u32 cap = (__u32)(dst.ByteLength() / sizeof(struct nt_conn));
    if (cap == 0) throw Napi::RangeError::New(env, "connsChunk: the buffer holds no struct nt_conn");
    if (cursor[1] == 2) return Napi::Number::New(env, 0);
    chunk_keys_.resize(cap);
    __u32 in = (__u32)cursor[0], out = 0, count = cap;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err = bpf_map_lookup_batch(bpf_map__fd(skel_->maps.conns), cursor[1] == 0 ? nullptr : &in, &out,
                                   chunk_keys_.data(), dst.Data(), &count, &opts);
    if (err && errno != ENOENT) {
      // ENOSPC: one hash bucket holds more entries than the chunk (the caller's buffer is far too small)
      ThrowCoded(env, "INTERNAL", std::string("reading the connection map failed: ") + strerror(errno));
    }
    cursor[0] = out;
    cursor[1] = err ? 2 : 1;  // ENOENT: no entries after these
    return Napi::Number::New(env, count);
  }

  Napi::Value Ifaces(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    std::map<std::pair<__u32, __u32>, nt_iface_val> sums;
    auto add = [&](const nt_iface_key &k, const nt_iface_val &v) {
      nt_iface_val &s = sums[{k.netns, k.ifindex}];
      s.rx_bytes += v.rx_bytes;
      s.rx_packets += v.rx_packets;
      s.tx_bytes += v.tx_bytes;
      s.tx_packets += v.tx_packets;
    };
    int slots_fd = bpf_map__fd(skel_->maps.iface_slots);
    std::vector<nt_iface_entry> slots(ncpus_);
    for (__u32 i = 0; i < NT_IFACE_SLOTS; i++) {
      if (bpf_map_lookup_elem(slots_fd, &i, slots.data()) != 0) continue;
      for (const nt_iface_entry &e : slots)
        if (e.key.netns) add(e.key, e.val);
    }
    int fd = bpf_map__fd(skel_->maps.ifaces);
    std::vector<nt_iface_val> vals(ncpus_);
    struct nt_iface_key key, next;
    void *prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      key = next;
      prev = &key;
      if (bpf_map_lookup_elem(fd, &key, vals.data()) != 0) continue;
      for (const nt_iface_val &v : vals) add(key, v);
    }
    std::vector<nt_iface_entry> out;
    for (const auto &kv : sums) {
      nt_iface_entry e = {};
      e.key.netns = kv.first.first;
      e.key.ifindex = kv.first.second;
      e.val = kv.second;
      out.push_back(e);
    }
    size_t bytes = out.size() * sizeof(nt_iface_entry);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, bytes);
    if (bytes) memcpy(ab.Data(), out.data(), bytes);
    return ab;
  }

  // refresh(): runs nt_refresh over every open file of every process (TCP counters brought up to the sockets'
  // sequence numbers, due flushes emitted into the ring buffer), synchronously: for open, snapshots and close.
  // refreshAsync(): the same on a libuv worker thread, resolving to the milliseconds it took. The walk costs ~0.3 µs
  // per open file and ~1.7 µs per TCP socket (bench/RESULTS.md): at 100k sockets that would block the event loop
  // for a quarter of a second every half flush interval, so the periodic refresh runs here.
  Napi::Value Refresh(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    if (!refresh_link_) return env.Undefined();
    std::string err;
    const char *code = RefreshAll(bpf_link__fd(refresh_link_), &err);
    if (code) ThrowCoded(env, code, err);
    return env.Undefined();
  }

  Napi::Value RefreshAsync(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!refresh_link_) {
      deferred.Resolve(Napi::Number::New(env, 0));
      return deferred.Promise();
    }
    // the worker holds its own reference to the iterator link: close() may destroy ours meanwhile
    int fd = fcntl(bpf_link__fd(refresh_link_), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) ThrowCoded(env, "INTERNAL", std::string("cannot duplicate the refresh iterator link: ") + strerror(errno));
    (new RefreshWorker(env, fd, deferred))->Queue();
    return deferred.Promise();
  }

  class RefreshWorker : public Napi::AsyncWorker {
   public:
    RefreshWorker(Napi::Env env, int link_fd, Napi::Promise::Deferred deferred)
        : Napi::AsyncWorker(env, "nettally-refresh"), link_fd_(link_fd), deferred_(deferred) {}
    ~RefreshWorker() override { close(link_fd_); }
    void Execute() override {
      uint64_t t0 = ClockNs(CLOCK_MONOTONIC);
      code_ = RefreshAll(link_fd_, &err_);
      ms_ = (double)(ClockNs(CLOCK_MONOTONIC) - t0) / 1e6;
    }
    void OnOK() override {
      Napi::Env env = Env();
      if (!code_) {
        deferred_.Resolve(Napi::Number::New(env, ms_));
        return;
      }
      Napi::Error e = Napi::Error::New(env, err_);
      e.Set("code", Napi::String::New(env, code_));
      deferred_.Reject(e.Value());
    }

   private:
    int link_fd_;
    Napi::Promise::Deferred deferred_;
    const char *code_ = nullptr;
    std::string err_;
    double ms_ = 0;
  };

  // The iterator cannot create socket cookies (its socket pointer is untrusted): it lists the sockets that have
  // none (they predate the capture and moved nothing since); their cookies are created here through the holder's
  // fd and the iterator runs once more, so that they are counted from now on like every other connection.
  // Returns nullptr, or an error code with *err set. Touches no JS and no member: runs on any thread.
  static const char *RefreshAll(int link_fd, std::string *err) {
    std::vector<nt_refresh_miss> missing;
    const char *code = RunIter(link_fd, &missing, err);
    if (!code && !missing.empty() && CreateCookies(missing) > 0) code = RunIter(link_fd, nullptr, err);
    return code;
  }

  static const char *RunIter(int link_fd, std::vector<nt_refresh_miss> *missing, std::string *err) {
    int fd = bpf_iter_create(link_fd);
    if (fd < 0) {
      *err = std::string("cannot run the refresh iterator: ") + strerror(errno);
      return "KERNEL_UNSUPPORTED";
    }
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0 && missing) out.append(buf, static_cast<size_t>(n));
    }
    int e = errno;
    close(fd);
    if (n < 0) {
      *err = std::string("refresh iterator failed: ") + strerror(e);
      return "INTERNAL";
    }
    if (!missing) return nullptr;
    for (size_t off = 0; off + sizeof(nt_refresh_miss) <= out.size(); off += sizeof(nt_refresh_miss)) {
      nt_refresh_miss m;
      memcpy(&m, out.data() + off, sizeof(m));
      missing->push_back(m);
    }
    return nullptr;
  }

  // SO_COOKIE on a duplicate of the holder's fd creates the socket's cookie (pidfd_getfd, Linux 5.6+; root or
  // CAP_SYS_PTRACE). A process or fd gone meanwhile is skipped: its socket is found by its next packet instead.
  static int CreateCookies(const std::vector<nt_refresh_miss> &missing) {
    int created = 0;
    uint32_t last_pid = 0;
    int pidfd = -1;
    for (const nt_refresh_miss &m : missing) {
      if (m.pid != last_pid || pidfd < 0) {
        if (pidfd >= 0) close(pidfd);
        pidfd = static_cast<int>(syscall(SYS_pidfd_open, m.pid, 0));
        last_pid = m.pid;
        if (pidfd < 0) continue;
      }
      int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, m.fd, 0));
      if (fd < 0) continue;
      uint64_t cookie = 0;
      socklen_t len = sizeof(cookie);
      if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) == 0 && cookie != 0) created++;
      close(fd);
    }
    if (pidfd >= 0) close(pidfd);
    return created;
  }

  // forget(BigUint64Array cookies): deletes entries that are closed; returns how many were deleted.
  // Deletes the given cookies (a Float64Array: cookies are < 2^53, and a BigInt per cookie cost more in JS than the
  // deletion) in one bpf(BPF_MAP_DELETE_BATCH) per run of known keys: it was a lookup (to check CLOSED) and a delete
  // per connection, two syscalls each, ~11% of the producer's busy CPU under connection churn. The caller passes
  // only cookies of close records (producer/capture.ts), so there is no CLOSED check any more.
  Napi::Value Forget(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      throw Napi::TypeError::New(env, "forget(cookies) needs a Float64Array");
    }
    Napi::Float64Array in = info[0].As<Napi::Float64Array>();
    std::vector<__u64> keys(in.ElementLength());
    for (size_t i = 0; i < keys.size(); i++) keys[i] = (__u64)in[i];
    int fd = bpf_map__fd(skel_->maps.conns);
    uint32_t deleted = 0;
    size_t at = 0;
    while (at < keys.size()) {
      __u32 count = (__u32)(keys.size() - at);
      int err = bpf_map_delete_batch(fd, keys.data() + at, &count, nullptr);
      deleted += count;
      at += count;
      if (err == 0) continue;
      // The kernel stops at the first key it cannot delete (ENOENT: already gone or unknown): skip it, go on.
      if (errno != ENOENT && err != -ENOENT) {
        // e.g. EINVAL on a kernel without batch ops for hash maps: one by one, as before
        for (; at < keys.size(); at++) deleted += bpf_map_delete_elem(fd, &keys[at]) == 0;
        break;
      }
      at++;
    }
    return Napi::Number::New(env, deleted);
  }

  // [{ name, id }] of the loaded programs (for bpftool / kernel.bpf_stats_enabled measurements).
  Napi::Value Programs(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Live(env);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_program *prog;
    uint32_t i = 0;
    bpf_object__for_each_program(prog, skel_->obj) {
      struct bpf_prog_info pi = {};
      __u32 len = sizeof(pi);
      if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &pi, &len) != 0) continue;
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(prog));
      o.Set("id", (double)pi.id);
      out.Set(i++, o);
    }
    return out;
  }

  // pause(true|false): stop/resume draining the ring buffer (backpressure from JS).
  Napi::Value Pause(const Napi::CallbackInfo &info) {
    paused_.store(info.Length() > 0 && info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    stop_.store(true);
    return info.Env().Undefined();
  }

  Napi::Value Warnings(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env, warnings_.size());
    for (size_t i = 0; i < warnings_.size(); i++) out.Set(i, Napi::String::New(env, warnings_[i]));
    return out;
  }

  struct nettally *skel_ = nullptr;
  struct ring_buffer *rb_ = nullptr;
  std::vector<struct bpf_link *> links_;
  struct bpf_link *refresh_link_ = nullptr;  // one of links_
  std::string cgroup_root_;                  // where the cgroup programs attach; empty: no cgroup2 mount
  std::vector<std::string> warnings_;
  std::vector<uint8_t> batch_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  Napi::ThreadSafeFunction tsfn_;
  std::vector<__u64> chunk_keys_;  // ConnsChunk's key buffer (the keys are in the values too)
  Napi::FunctionReference on_closed_;
  int ncpus_ = 1;
};

Napi::Value Clocks(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::BigInt::New(env, (uint64_t)ClockNs(CLOCK_BOOTTIME)));
  out.Set(1u, Napi::BigInt::New(env, (uint64_t)ClockNs(CLOCK_REALTIME)));
  return out;
}

Napi::Value Layout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("conn_record", (double)sizeof(struct nt_conn_record));
  o.Set("listen_record", (double)sizeof(struct nt_listen_record));
  o.Set("naive_record", (double)sizeof(struct nt_naive_record));
  o.Set("conn", (double)sizeof(struct nt_conn));
  o.Set("iface_entry", (double)sizeof(struct nt_iface_entry));
  o.Set("stat_max", (double)NT_STAT_MAX);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Capture", Capture::Init(env));
  exports.Set("clocks", Napi::Function::New(env, Clocks));
  exports.Set("layout", Napi::Function::New(env, Layout));
  exports.Set("exec", Napi::Function::New(env, Exec));
  return exports;
}

}  // namespace

NODE_API_MODULE(nettally, Init)
