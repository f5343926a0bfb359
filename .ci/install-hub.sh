#!/bin/sh
# Install what the JupyterHub test (tests/test_jupyterhub.py) needs: what docs/jupyterhub.md
# installs (hub:system, hub:venv) -- JupyterHub, JupyterLab and the idle culler (pip, into this
# Python: the test's venv for /opt/jupyterhub shares its packages), configurable-http-proxy
# (npm, needs Debian's nodejs + npm) -- and websocket-client, which the test talks to kernels
# with. Idempotent: pip, apt and npm are only touched when something is missing.
set -eu

PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# The hub and the single-user servers it spawns run on this Python (jupyterhub-singleuser
# is a jupyter_server extension; the config starts jupyterhub_idle_culler as a service).
missing=""
for spec in "jupyterhub:jupyterhub>=5" "jupyterlab:jupyterlab>=4" \
            "jupyterhub_idle_culler:jupyterhub-idle-culler>=1.2" \
            "jupyter_server:jupyter_server>=2" "websocket:websocket-client>=1.6"; do
    module="${spec%%:*}"
    requirement="${spec#*:}"
    if ! "$PYTHON" -c "import $module" 2>/dev/null; then
        missing="$missing $requirement"
    fi
done
if [ -n "$missing" ]; then
    echo "pip installing:$missing"
    # shellcheck disable=SC2086  # word splitting of the requirement list is intended
    "$PYTHON" -m pip install -q $missing
else
    echo "python packages present: jupyterhub jupyterlab jupyterhub-idle-culler jupyter_server" \
         "websocket-client"
fi

if ! command -v npm >/dev/null 2>&1; then
    sh "$(dirname "$0")/apt-ensure.sh" nodejs npm
fi
# The test makes the guide's group and users, and runs commands as them.
for tool in groupadd usermod gpasswd chpasswd runuser setpriv; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        sh "$(dirname "$0")/apt-ensure.sh" passwd util-linux
        break
    fi
done

if command -v configurable-http-proxy >/dev/null 2>&1; then
    echo "configurable-http-proxy present"
else
    $SUDO npm install -g --no-audit --no-fund configurable-http-proxy
fi

"$PYTHON" -c "import jupyterhub; print('jupyterhub', jupyterhub.__version__)"
"$PYTHON" -c "import jupyterhub_idle_culler as c; print('jupyterhub-idle-culler', c.__version__)"
echo "configurable-http-proxy $(configurable-http-proxy --version)"
