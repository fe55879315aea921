#!/usr/bin/env bash
# The test command (README.md): on a fresh Debian machine as root, installs and
# starts what the tests need, then runs every suite. Fails loudly if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"
export PATH="/usr/bin:$PATH" # Debian's docker client first (matches the 20.10 daemon)

step() { printf '\n=== %s ===\n' "$*"; }

step "static checks"
cargo fmt -p calico-medic --check
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

step "unit + namespace tests"
cargo test -p calico-medic --lib --test netns_repair
