#!/usr/bin/env bash
# Builds everything from source: BPF objects + skeletons (build/), the native addon (native/build/), TypeScript (dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm install, not npm ci: npm 11 writes lock files that its own `npm ci` rejects (optional platform packages).
# Also after a pull or merge that changed the dependencies (npm writes node_modules/.package-lock.json).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
  touch node_modules/.package-lock.json  # an install that changed nothing must not run again on every build
fi

mkdir -p build
# CO-RE: the kernel's own BTF gives vmlinux.h; the objects then relocate on any BTF kernel.
if [ ! -s build/vmlinux.h ]; then
  bpftool btf dump file /sys/kernel/btf/vmlinux format c > build/vmlinux.h.tmp
  mv build/vmlinux.h.tmp build/vmlinux.h
fi

arch=$(uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
for src in bpf/*.bpf.c; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .bpf.c)
  obj=build/$name.bpf.o
  if [ ! -e "$obj" ] || [ -n "$(find bpf -newer "$obj" -print -quit)" ]; then
    echo "build: $src -> $obj" >&2
    clang -g -O2 -Wall -Werror -target bpf -mcpu=v3 -D__TARGET_ARCH_"$arch" -Ibuild -Ibpf -c "$src" -o "$obj"
    bpftool gen skeleton "$obj" name "$name" > "build/$name.skel.h"
  fi
done

# Generated record definitions (the *.generated.ts that scripts/gen-records.js lists) are committed so a fresh
# clone type-checks; fail here when one is stale, and when bpf/nettally.h does not describe what clang laid out.
btf=(); [ -e build/nettally.bpf.o ] && btf=(--btf build/nettally.bpf.o)
node scripts/gen-records.js --check "${btf[@]}"

if [ -f native/binding.gyp ]; then
  addon=native/build/Release/nettally.node
  if [ ! -e "$addon" ] || [ -n "$(find native bpf build -maxdepth 1 -newer "$addon" \( -name '*.cc' -o -name '*.h' -o -name '*.gyp' \) -print -quit)" ]; then
    echo "build: native addon" >&2
    # Offline: build against the running node's own headers instead of downloading them from nodejs.org.
    nodedir=$(dirname "$(dirname "$(command -v node)")")
    gypargs=(); [ -f "$nodedir/include/node/node.h" ] && gypargs=(--nodedir="$nodedir")
    (cd native && ../node_modules/.bin/node-gyp rebuild --silent "${gypargs[@]}")
  fi
fi

echo "build: typescript" >&2
# tsc emits even with type errors; NETTALLY_BUILD_STRICT=1 (set by `npm test`) makes them fatal.
if ! ./node_modules/.bin/tsc -p tsconfig.json; then
  echo "build: TypeScript errors (see above)" >&2
  [ "${NETTALLY_BUILD_STRICT:-0}" = 1 ] && exit 1
fi
