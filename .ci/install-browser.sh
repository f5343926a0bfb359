#!/bin/sh
# Install what the browser tests (tests/test_browser.py) need: Debian's Chromium, a font with
# wide glyph coverage for MathJax/SVG text, and the Playwright Python package.
# Idempotent: apt and pip are only touched when something is missing.
# Playwright is only the driver: the tests launch /usr/bin/chromium. Never run
# `playwright install` (it downloads a browser of its own, which this network refuses).
set -eu

PKGS="chromium fonts-dejavu-core"
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=""
for pkg in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
else
    echo "system packages present: $PKGS"
fi

if "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    echo "playwright present"
else
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces, pip itself downloads no browser.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PYTHON" -m pip install -q "playwright>=1.45"
fi

dpkg-query -W -f='chromium ${Version}\n' chromium
"$PYTHON" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
