#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser test (Playwright drives it; Playwright's own browser
# download does not work on closed networks). Prints the executable's path.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "error: $CHROMIUM is missing and there are no root rights to install it (apt-get install chromium)" >&2
    exit 1
  fi
  echo "==> installing Debian's chromium (browser test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && \
    $SUDO apt-get install -y -q chromium >/dev/null; }
fi
[ -x "$CHROMIUM" ] || { echo "error: chromium did not install at $CHROMIUM" >&2; exit 1; }
echo "$CHROMIUM"
