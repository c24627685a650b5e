#!/usr/bin/env bash
# Builds the C kitchen-sink task into plugins/c/stamp.wasm.
#
# Compiler: Debian's clang 14 for wasm32-wasi with wasi-libc and the wasm32 compiler-rt
# (apt packages clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32, installed when missing).
# Linker: the wasm-component-ld shipped inside the Rust toolchain (rust-toolchain.toml pins
# it): it runs wasm-ld, then wraps the module into a component with the WASI preview1
# reactor adapter it carries, reading the world from bindings/plugin_component_type.o.
#
# bindings/ is generated and committed, so no wit-bindgen is needed to build. After a change
# to wit/task.wit, regenerate it with wit-bindgen-cli 0.63.0:
#   cargo install --locked wit-bindgen-cli@0.63.0
#   wit-bindgen c ../../wit --world plugin --out-dir bindings
set -euo pipefail
cd "$(dirname "$0")"
packages=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
component_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
[ -x "$component_ld" ] || { echo "error: $component_ld not found (Rust >= 1.82 ships it)" >&2; exit 1; }
clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -std=c11 \
    -Ibindings -fuse-ld="$component_ld" \
    -Wl,--wasm-ld-path=/usr/bin/wasm-ld-14 -Wl,--wasi-adapter=reactor \
    -o stamp.wasm stamp.c json.c bindings/plugin.c bindings/plugin_component_type.o
