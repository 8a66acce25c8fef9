#!/usr/bin/env bash
# Install the Prometheus server and promtool (Debian's `prometheus` package) for the integration tests.
# Idempotent: does nothing when both are already on PATH. Never leaves the package's system service
# running: the tests start their own Prometheus on a free loopback port.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    echo "infra/prometheus/install.sh: prometheus and promtool are not installed and this is not root." >&2
    echo "  Install them as root:  apt-get update && apt-get install -y prometheus" >&2
    echo "  (or put a Prometheus 2.x release's prometheus and promtool binaries on PATH)." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "infra/prometheus/install.sh: no apt-get here; put prometheus and promtool (2.x) on PATH yourself." >&2
    exit 1
fi

echo "installing prometheus and promtool (Debian package prometheus)"
apt-get update -qq
# policy-rc.d exit 101 tells the package's postinst not to start its service.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if [ "$created_policy" = "1" ]; then
    rm -f "$policy"
fi

# If a service manager started the packaged server anyway, stop it and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
    systemctl disable prometheus >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1 && [ -x /etc/init.d/prometheus ]; then
    service prometheus stop >/dev/null 2>&1 || true
fi
for pid in $(pgrep -x prometheus -u prometheus 2>/dev/null || true); do
    kill "$pid" 2>/dev/null || true
done

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
