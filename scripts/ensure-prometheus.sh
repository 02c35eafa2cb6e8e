#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for the real-Prometheus tests.
# Installs the Debian package `prometheus` only when either binary is missing; never enables
# or starts its service (the tests start the binary themselves on 127.0.0.1).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: prometheus/promtool missing and apt-get not available;" \
         "install Prometheus 2.x so both are on PATH" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "ensure-prometheus: installing the Debian package prometheus" >&2
# policy-rc.d 101 keeps maintainer scripts from starting the service where an init exists.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

command -v prometheus >/dev/null && command -v promtool >/dev/null
prometheus --version 2>&1 | head -n 1 >&2
