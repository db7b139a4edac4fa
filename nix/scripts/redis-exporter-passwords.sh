#!/usr/bin/env bash
# Writes redis_exporter's --redis.password-file, a JSON object {"<redis.addr>": "<password>"}, from a
# password file: by default the systemd credential redis_password of the exporter's unit. The
# password never appears on a command line or in the Nix store; jq quotes it, whatever it contains.
# Usage: redis-exporter-passwords.sh ADDR OUTPUT [PASSWORD_FILE]
set -euo pipefail

usage="usage: redis-exporter-passwords.sh ADDR OUTPUT [PASSWORD_FILE]"
addr=${1:?$usage}
output=${2:?$usage}
password_file=${3:-${CREDENTIALS_DIRECTORY:?$usage (no PASSWORD_FILE and no systemd credentials)}/redis_password}
umask 0077
jq -n --arg addr "$addr" --rawfile password "$password_file" \
  '{($addr): ($password | sub("\n+$"; ""))}' >"$output.tmp"
mv "$output.tmp" "$output"
