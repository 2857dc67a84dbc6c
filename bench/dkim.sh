#!/bin/sh
# DKIM signing benchmark (issue 5): sealgate signing a 100 KiB message versus what
# `openssl speed` says one RSA-2048 signature plus SHA-256 over 100 KiB costs on this
# machine, measured in the same run. Target: ratio <= 1.2. Also prints Ed25519.
#
# usage: bench/dkim.sh            (run from the repository root; SECONDS per figure: 3)
set -eu
secs="${DKIM_BENCH_SECONDS:-3}"
bytes=102400

# One test at a time: parallel tests would compete for the CPU being measured.
raw=$(DKIM_BENCH_SECONDS="$secs" cargo test --release --quiet --test dkim_bench -- \
    --ignored --nocapture --test-threads=1 2>/dev/null)
echo "$raw" | grep -o 'DKIM_BREAKDOWN.*' || true
out=$(echo "$raw" | grep -o 'DKIM_BENCH.*')
echo "$out"

# "rsa 2048 bits 0.000601s 0.000017s 1663.2 58000.0" -> sign/s is field 6 of the rsa line.
rsa_sign_per_s=$(openssl speed -seconds "$secs" rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')
# "sha256  ...  <kB/s for 102400-byte blocks>" with -bytes: the last field, in kB/s (1000 bytes).
sha_kbps=$(openssl speed -seconds "$secs" -bytes "$bytes" sha256 2>/dev/null | awk '/^sha256/ {v=$NF; sub(/k$/, "", v); print v}')

echo "$out" | awk -v rs="$rsa_sign_per_s" -v kb="$sha_kbps" -v n="$bytes" '
{
  for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
  rsa_us = 1e6 / rs
  sha_us = n / (kb * 1000) * 1e6
  base = rsa_us + sha_us
  if (NR == 1) printf "openssl: rsa2048 sign %.1f us (%.0f/s), sha256 over %d bytes %.1f us => %.1f us\n", rsa_us, rs, n, sha_us, base
  printf "--- %s (%d bytes)\n", f["shape"], f["bytes"]
  printf "sealgate: rsa-sha256 %.1f us  ratio %.2fx (target <= 1.2x)\n", f["rsa_us"], f["rsa_us"] / base
  printf "sealgate: ed25519-sha256 %.1f us  (%.2fx the openssl baseline)\n", f["ed25519_us"], f["ed25519_us"] / base
  printf "sealgate: rsa + ed25519 %.1f us\n", f["both_us"]
  printf "in-process OpenSSL baseline (same rounds) %.1f us: rsa-sha256 ratio %.2fx\n", f["inproc_openssl_us"], f["rsa_us"] / f["inproc_openssl_us"]
}'
