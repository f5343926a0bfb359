#!/bin/sh
# Install the system packages the SSH test bed (tests/sshbed.py) needs, an MIT KDC for
# the Kerberos/GSSAPI set-up (tests/test_openssh_backend.py), and Slurm with munge for the
# cluster on the login-node namespace (tests/slurmbed.py).
# Idempotent: apt is only touched when something is missing.
set -eu

sh "$(dirname "$0")/apt-ensure.sh" openssh-server openssh-client iproute2 nftables procps \
    krb5-kdc krb5-admin-server krb5-user \
    slurmctld slurmd slurm-client munge

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# sshd refuses to start without its privilege-separation directory.
$SUDO mkdir -p /run/sshd
$SUDO chmod 0755 /run/sshd
