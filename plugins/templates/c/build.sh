#!/usr/bin/env bash
# Builds the task into a WebAssembly component; prints its path as the last line.
# Compiler: Debian's clang 14 for wasm32-wasi with wasi-libc (apt packages clang-14 lld-14
# wasi-libc libclang-rt-14-dev-wasm32, installed when missing). Linker: wasm-component-ld,
# which runs wasm-ld and wraps the module into a component with the WASI preview1 reactor
# adapter it carries: the one inside the Rust toolchain when there is one, else version
# {{component_ld}} installed once with cargo, or from its release, into the shared tool cache
# ($FLOWHOST_TOOLS, default ~/.cache/flowhost/tools).
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${FLOWHOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flowhost/tools}"
packages=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
component_ld=""
if command -v rustc >/dev/null; then
    component_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
fi
if [ ! -x "$component_ld" ]; then
    component_ld="$TOOLS/wasm-component-ld-{{component_ld}}/wasm-component-ld"
    if [ ! -x "$component_ld" ]; then
        mkdir -p "$(dirname "$component_ld")"
        arch="$(uname -m)"
        url="https://github.com/bytecodealliance/wasm-component-ld/releases/download/v{{component_ld}}/wasm-component-ld-v{{component_ld}}-$arch-linux.tar.gz"
        curl -sSfL "$url" | tar -xz -C "$(dirname "$component_ld")" --strip-components=1 >&2
    fi
fi
clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -std=c11 \
    -Ibindings -fuse-ld="$component_ld" \
    -Wl,--wasm-ld-path=/usr/bin/wasm-ld-14 -Wl,--wasi-adapter=reactor \
    -o {{wasm}} task.c json.c bindings/plugin.c bindings/plugin_component_type.o >&2
echo "$PWD/{{wasm}}"
