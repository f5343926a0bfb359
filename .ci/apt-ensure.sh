#!/bin/sh
# Install the Debian packages named as arguments that are missing; touch apt only then.
# Shared by the install-*.sh scripts.
set -eu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=""
for pkg in "$@"; do
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
    echo "system packages present: $*"
fi
