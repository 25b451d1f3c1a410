// Kernel and system checks for the addon (declared and explained in system.h).
#include "system.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <mntent.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace ntsys {

namespace {

std::mutex g_log_mu;
std::string g_log;  // libbpf warnings/verifier output, tail kept for error messages

}  // namespace

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[2048];
  vsnprintf(buf, sizeof(buf), fmt, args);
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log += buf;
  if (g_log.size() > 8192) g_log.erase(0, g_log.size() - 8192);
  return 0;
}

std::string TakeLog() {
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::string s;
  s.swap(g_log);
  return s;
}

[[noreturn]] void ThrowCoded(Napi::Env env, const char *code, const std::string &msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

namespace {

bool HasBpfCaps() {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return geteuid() == 0;
  auto has = [&](int cap) { return (data[cap / 32].effective & (1u << (cap % 32))) != 0; };
  const int kCapPerfmon = 38, kCapBpf = 39;
  return has(CAP_SYS_ADMIN) || (has(kCapBpf) && has(kCapPerfmon));
}

struct TpCheck {
  const char *prog;
  const char *category;
  const char *name;
};

const TpCheck kBtfTracepoints[] = {
    {"nt_send", "sock", "sock_send_length"},        {"nt_recv", "sock", "sock_recv_length"},
    {"nt_state", "sock", "inet_sock_set_state"},    {"nt_tcp_destroy", "tcp", "tcp_destroy_sock"},
    {"nt_if_rx", "net", "netif_receive_skb"},       {"nt_if_tx", "net", "net_dev_xmit"},
    {"nt_udp_drop", "udp", "udp_fail_queue_rcv_skb"}, {"nt_if_tx_start", "net", "net_dev_start_xmit"},
};

}  // namespace

void CheckKernel(Napi::Env env) {
  if (!HasBpfCaps()) {
    ThrowCoded(env, "PRIVILEGES",
               "loading eBPF programs needs root or CAP_BPF+CAP_PERFMON (+CAP_NET_ADMIN for the cgroup hook): run with "
               "sudo, or grant them to node: sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep \"$(readlink -f "
               "\"$(command -v node)\")\"");
  }
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
    ThrowCoded(env, "KERNEL_UNSUPPORTED",
               "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): nettally needs a kernel built with "
               "CONFIG_DEBUG_INFO_BTF=y (5.8 or newer)");
  }
  struct btf *vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) {
    ThrowCoded(env, "KERNEL_UNSUPPORTED", std::string("cannot read the kernel's BTF: ") + strerror(errno));
  }
  for (const TpCheck &tp : kBtfTracepoints) {
    std::string type = std::string("btf_trace_") + tp.name;
    if (btf__find_by_name_kind(vmlinux, type.c_str(), BTF_KIND_TYPEDEF) < 0) {
      btf__free(vmlinux);
      ThrowCoded(env, "KERNEL_UNSUPPORTED",
                 std::string("this kernel has no tracepoint ") + tp.category + ":" + tp.name + " (needed by " +
                     tp.prog + "); sock_send_length/sock_recv_length need Linux 6.3 or newer");
    }
  }
  if (btf__find_by_name_kind(vmlinux, "bpf_iter__task_file", BTF_KIND_STRUCT) < 0) {
    btf__free(vmlinux);
    ThrowCoded(env, "KERNEL_UNSUPPORTED",
               "this kernel has no BPF task_file iterator (bpf_iter__task_file, Linux 5.8+; needed by nt_refresh)");
  }
  btf__free(vmlinux);
}

std::string Cgroup2Root() {
  FILE *f = setmntent("/proc/self/mounts", "r");
  if (!f) return "";
  std::string path;
  while (struct mntent *m = getmntent(f)) {
    if (strcmp(m->mnt_type, "cgroup2") == 0) {
      path = m->mnt_dir;
      break;
    }
  }
  endmntent(f);
  return path;
}

int MkdirAll(const std::string &dir) {
  for (size_t i = 1; i <= dir.size(); i++) {
    if (i == dir.size() || dir[i] == '/') {
      std::string part = dir.substr(0, i);
      if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return -errno;
    }
  }
  return 0;
}

uint64_t ClockNs(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

// exec(path, argv, env): replaces this process's image (execve: same pid, same open stdio), so that `nettally
// producer` can start again with the runtime settings it needs (producer/runtime.ts) without a parent process
// holding memory. Returns only by throwing (the errno text): the caller then runs on as it is.
Napi::Value Exec(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsArray()) {
    throw Napi::TypeError::New(env, "exec(path, argv[], env[]) needs a string and two arrays of strings");
  }
  auto strings = [](Napi::Array a) {
    std::vector<std::string> v;
    for (uint32_t i = 0; i < a.Length(); i++) v.push_back(a.Get(i).ToString().Utf8Value());
    return v;
  };
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> args = strings(info[1].As<Napi::Array>()), envs = strings(info[2].As<Napi::Array>());
  std::vector<char *> argv, envp;
  for (auto &s : args) argv.push_back(s.data());
  for (auto &s : envs) envp.push_back(s.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  // stdin/out/err stay the process's own (Node may have marked them close-on-exec); nothing else is passed on.
  for (int fd = 0; fd <= 2; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  execve(path.c_str(), argv.data(), envp.data());
  throw Napi::Error::New(env, std::string("execve ") + path + ": " + strerror(errno));
}

}  // namespace ntsys
