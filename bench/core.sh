#!/bin/sh
# End-to-end benchmark (issue 2 "Performance", issue 5 DKIM variant): sealgate vs the
# system Postfix relaying to the same implicit-TLS sink. See bench/README.md.
#
# usage: bench/core.sh [-n 4000] [-c 8] [--size 4096] [--fresh-connections | --both-modes]
#                      [--dkim | --dkim-only] [--upstream-connections 4] [--skip-postfix] ...
# Needs root for the Postfix half: it rewrites /etc/postfix/main.cf and master.cf
# (postconf -e / -M / -F) and starts and stops Postfix. Throwaway machines only.
set -eu
cd "$(dirname "$0")/.."
exec python3 bench/core.py "$@"
