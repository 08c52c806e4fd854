#!/usr/bin/env bash
# ThreadSanitizer over the segment's concurrency test (tests/segment/threads.rs): a writer thread
# and a reader thread on one Segment, so that both sides of the optimistic read run in one
# address space where the sanitizer sees them. Exits non-zero (66) on any report.
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 unlocks -Zsanitizer=thread. The standard
# library stays uninstrumented (no rust-src here, so no -Zbuild-std), hence
# -Cunsafe-allow-abi-mismatch=sanitizer and the suppressions in scripts/tsan.supp, which say
# what they hide and why. --target keeps build scripts and proc macros uninstrumented; the
# separate target directory keeps these builds apart from the normal ones.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"
export TSAN_OPTIONS="halt_on_error=0 suppressions=$PWD/scripts/tsan.supp ${TSAN_OPTIONS:-}"
exec cargo test --target "$(rustc -vV | sed -n 's/^host: //p')" --target-dir target/tsan \
  --test segment threads -- "$@"
