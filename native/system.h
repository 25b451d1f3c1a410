// Kernel and system checks shared by the addon: libbpf's log tail, privilege and tracepoint checks (so a missing
// capability or tracepoint is a coded error that names what to do, before anything loads), mounts and clocks.
#pragma once

#include <napi.h>

#include <bpf/libbpf.h>
#include <time.h>

#include <cstdarg>
#include <cstdint>
#include <string>

namespace ntsys {

// libbpf print callback: keeps the tail of warnings and verifier output for error messages.
int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args);
// The kept libbpf output, cleared.
std::string TakeLog();
// Throws a JS Error carrying `code` (NettallyError codes in lib/errors.ts).
[[noreturn]] void ThrowCoded(Napi::Env env, const char *code, const std::string &msg);
// Throws PRIVILEGES or KERNEL_UNSUPPORTED when this process or kernel cannot run the capture.
void CheckKernel(Napi::Env env);
// Where cgroup2 is mounted, or "" when it is not.
std::string Cgroup2Root();
// mkdir -p with mode 0700; 0 or -errno.
int MkdirAll(const std::string &dir);
uint64_t ClockNs(clockid_t id);
// exec(path, argv[], env[]): replaces this process (same pid; stdio kept, nothing else). Throws only on failure.
Napi::Value Exec(const Napi::CallbackInfo &info);

}  // namespace ntsys
