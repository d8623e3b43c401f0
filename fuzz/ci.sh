#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, FUZZ_SECONDS each (45 by default), and fails on a
# crash; libFuzzer leaves the input in fuzz/artifacts/<target>/ and prints how to rerun it.
# Each target starts from its seeds (fuzz/corpus/<target>/) and regressions
# (fuzz/regressions/<target>/), read only: the inputs it finds go to a scratch directory that is
# removed afterwards. Needs the nightly toolchain (skips with a message without it) and
# cargo-fuzz (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-45}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: SKIPPED, no nightly toolchain (the corpus tests still ran under cargo test)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# No sanitizer: the workspace forbids unsafe code, so what fuzzing can find is panics, overflows
# (debug assertions and overflow checks are on), hangs and memory blow-ups, none of which needs
# ASan, which would roughly double build and run time on CI's two cores.
flags=(--sanitizer none --debug-assertions)
# The fuzz crate has a workspace of its own: start it from the main lock file so it builds the
# versions the tests ran with (fuzz/Cargo.lock is not committed).
if [ ! -f fuzz/Cargo.lock ]; then cp Cargo.lock fuzz/Cargo.lock; fi
started=$SECONDS
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: targets built in $((SECONDS - started)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  corpus=("$scratch/$target")
  mkdir -p "$scratch/$target"
  for dir in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
    if [ -d "$dir" ]; then corpus+=("$dir"); fi
  done
  echo "fuzz: $target for ${seconds} s"
  # libFuzzer logs every new input: keep the log, show its end (on a crash: the panic, the
  # stack, the input's path and the command that reruns it).
  log="$scratch/$target.log"
  if cargo +nightly fuzz run "${flags[@]}" "$target" "${corpus[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    grep -E '^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log" || true
  else
    tail -n 80 "$log"
    failed+=("$target")
  fi
done
echo "fuzz: done in $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
