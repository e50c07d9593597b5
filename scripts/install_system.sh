#!/usr/bin/env bash
# System packages the end-to-end tests use: Debian's Chromium for the headless UI test.
# Installed only when missing and when we may (root); otherwise that test is skipped.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not installed and cannot install it here: the browser test will be skipped" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
