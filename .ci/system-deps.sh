#!/usr/bin/env bash
# System packages the test suite needs: Debian's chromium for the browser test (Playwright never
# downloads a browser) and docker-compose v1 to validate docker/compose.yaml without an engine.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "warning: missing system packages ${need[*]} (tests that need them will skip)" >&2
  fi
fi
