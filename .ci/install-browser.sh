#!/bin/sh
# Install what the browser tests (tests/test_browser.py) need: Debian's Chromium, a font with
# wide glyph coverage for MathJax/SVG text, and the Playwright Python package.
# Idempotent: apt and pip are only touched when something is missing.
# Playwright is only the driver: the tests launch /usr/bin/chromium. Never run
# `playwright install` (it downloads a browser of its own, which this network refuses).
set -eu

PYTHON="${PYTHON:-python3}"

sh "$(dirname "$0")/apt-ensure.sh" chromium fonts-dejavu-core

if "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    echo "playwright present"
else
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces, pip itself downloads no browser.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PYTHON" -m pip install -q "playwright>=1.45"
fi

dpkg-query -W -f='chromium ${Version}\n' chromium
"$PYTHON" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
