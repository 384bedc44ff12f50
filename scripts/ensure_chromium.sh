#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (Playwright drives it; Playwright's own browser
# download does not work on closed networks), with CJK fonts so screenshots show the Chinese names (Debian's
# fonts-noto-cjk). Prints the executable's path.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then missing+=(fonts-noto-cjk); fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "error: ${missing[*]} missing and there are no root rights to install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "==> installing Debian's ${missing[*]} (browser tests)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && \
    $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
[ -x "$CHROMIUM" ] || { echo "error: chromium did not install at $CHROMIUM" >&2; exit 1; }
fc-list :lang=zh 2>/dev/null | grep -q . || { echo "error: no CJK font after installing fonts-noto-cjk" >&2; exit 1; }
echo "$CHROMIUM"
