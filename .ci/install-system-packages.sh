#!/bin/sh
# Install the system packages the SSH test bed (tests/sshbed.py) needs.
# Idempotent: apt is only touched when something is missing.
set -eu

sh "$(dirname "$0")/apt-ensure.sh" openssh-server openssh-client iproute2 nftables procps

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# sshd refuses to start without its privilege-separation directory.
$SUDO mkdir -p /run/sshd
$SUDO chmod 0755 /run/sshd
