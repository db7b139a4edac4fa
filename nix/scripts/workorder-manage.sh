#!/usr/bin/env bash
# workorder-manage for administrators: Django's management commands with the service's environment,
# as the service user (like pretix-manage and netbox-manage).
#
# The NixOS module's wrapper sets:
#   WORKORDER_MANAGE_BIN        the package's own workorder-manage
#   WORKORDER_MANAGE_USER       the service user
#   WORKORDER_MANAGE_DIR        the working directory (the state directory)
#   WORKORDER_MANAGE_ENV_FILES  colon-separated KEY=VALUE files, read in order (a later one wins):
#                               the module's environment, then services.workorder.environmentFile
#   WORKORDER_MANAGE_SECRETS    colon-separated NAME=FILE pairs; as root, NAME gets FILE's contents
#                               (the files are usually readable by root only)
#
# The environment files are read as data, never by the shell: a value such as $(command) stays text.
# Syntax as systemd's EnvironmentFile=: KEY=VALUE lines, '#' or ';' comments, one pair of
# surrounding quotes removed from the value.
set -euo pipefail

: "${WORKORDER_MANAGE_BIN:?}" "${WORKORDER_MANAGE_USER:?}" "${WORKORDER_MANAGE_DIR:?}"

load_env_file() {
  local file=$1 line key value number=0
  while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    line=${line#"${line%%[![:space:]]*}"}
    case $line in
      '' | '#'* | ';'*) continue ;;
    esac
    key=${line%%=*}
    value=${line#*=}
    if [[ $line != *=* || ! $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      echo "workorder-manage: $file:$number: not a KEY=VALUE line, ignored" >&2
      continue
    fi
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    export "$key=$value"
  done <"$file"
}

if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != "$WORKORDER_MANAGE_USER" ]; then
  echo "workorder-manage: run it as root (sudo) or as $WORKORDER_MANAGE_USER" >&2
  exit 1
fi

IFS=: read -r -a env_files <<<"${WORKORDER_MANAGE_ENV_FILES:-}"
for file in "${env_files[@]}"; do
  [ -n "$file" ] && load_env_file "$file"
done

if [ "$(id -u)" -eq 0 ]; then
  IFS=: read -r -a secrets <<<"${WORKORDER_MANAGE_SECRETS:-}"
  for pair in "${secrets[@]}"; do
    [ -n "$pair" ] || continue
    name=${pair%%=*}
    value=$(<"${pair#*=}")
    export "$name=$value"
  done
fi

bin=$WORKORDER_MANAGE_BIN
user=$WORKORDER_MANAGE_USER
cd "$WORKORDER_MANAGE_DIR"
unset WORKORDER_MANAGE_BIN WORKORDER_MANAGE_USER WORKORDER_MANAGE_DIR WORKORDER_MANAGE_ENV_FILES WORKORDER_MANAGE_SECRETS
if [ "$(id -u)" -eq 0 ] && [ "$user" != root ]; then
  exec runuser -u "$user" -- "$bin" "$@"
fi
exec "$bin" "$@"
