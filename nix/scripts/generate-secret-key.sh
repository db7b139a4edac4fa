#!/usr/bin/env bash
# Creates a secret file once (Django's secret key, the local Redis password): 64 URL-safe
# characters, readable by its owner only.
# Nothing happens when the file already holds a key. Usage: generate-secret-key.sh FILE
set -euo pipefail

target=${1:?usage: generate-secret-key.sh FILE}
if [ -s "$target" ]; then
  exit 0
fi
umask 0077
# head reads a bounded amount from a file (no pipe to close early), so no SIGPIPE under pipefail.
key=$(head -c 48 /dev/urandom | base64 -w 0 | tr '+/' '-_')
printf '%s' "$key" >"$target.tmp"
mv "$target.tmp" "$target"
