#!/usr/bin/env bash
# Installs every system package nettally needs; safe to run again.
set -euo pipefail

PKGS=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ python3
      iproute2 iperf3 tcpdump kcat influxdb influxdb-client procps psmisc util-linux curl
      chromium)  # chromium: the dashboard test loads the page in a real (headless) browser

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing system packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts influxd as a service on install; nettally runs its own instance on its own data dir.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now influxdb >/dev/null 2>&1 || true; fi
fi

# No mounts here: the producer mounts bpffs when it needs it, and `nettally up` unmounts on exit
# whatever was not mounted before it started.
