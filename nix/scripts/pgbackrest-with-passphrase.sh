#!/usr/bin/env bash
# pgBackRest with the repository's encryption passphrase read at runtime, never from the store.
#
#   WORKORDER_PGBACKREST_BIN              the pgbackrest binary (default: pgbackrest on PATH)
#   WORKORDER_PGBACKREST_REPO             index of the encrypted repository (default 1):
#                                         the passphrase goes into PGBACKREST_REPO<n>_CIPHER_PASS
#   WORKORDER_PGBACKREST_PASSPHRASE_FILE  the passphrase file, read when no systemd credential is
#                                         there (an administrator's shell as root); may be empty
#   WORKORDER_PGBACKREST_USER             run as this user when started as root (default: postgres)
#
# In units (postgresql.service for archive_command, the backup/verify/metrics units) the file
# arrives as the systemd credential `pgbackrest-passphrase` ($CREDENTIALS_DIRECTORY), so the
# database user never needs read access to the original. Its first line is the passphrase.
set -euo pipefail

bin=${WORKORDER_PGBACKREST_BIN:-pgbackrest}
repo=${WORKORDER_PGBACKREST_REPO:-1}
case $repo in
  '' | *[!0-9]*)
    echo "pgbackrest-with-passphrase: WORKORDER_PGBACKREST_REPO must be a number, not '$repo'" >&2
    exit 2
    ;;
esac

passphrase_file=
if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -f "$CREDENTIALS_DIRECTORY/pgbackrest-passphrase" ]; then
  passphrase_file=$CREDENTIALS_DIRECTORY/pgbackrest-passphrase
elif [ -n "${WORKORDER_PGBACKREST_PASSPHRASE_FILE:-}" ]; then
  passphrase_file=$WORKORDER_PGBACKREST_PASSPHRASE_FILE
fi

if [ -n "$passphrase_file" ]; then
  if [ ! -r "$passphrase_file" ]; then
    echo "pgbackrest-with-passphrase: cannot read $passphrase_file (run as root, or in the unit)" >&2
    exit 2
  fi
  passphrase=
  # The first line; a file without a trailing newline still counts (read then fails, the line stays).
  IFS= read -r passphrase <"$passphrase_file" || true
  if [ -z "$passphrase" ]; then
    echo "pgbackrest-with-passphrase: $passphrase_file is empty" >&2
    exit 2
  fi
  export "PGBACKREST_REPO${repo}_CIPHER_PASS=$passphrase"
fi

if [ "$(id -u)" -eq 0 ]; then
  # root reads the file; pgBackRest runs as the database's user, which owns the repository (the
  # environment, and with it the passphrase, is kept by runuser without --login).
  cd /
  exec runuser -u "${WORKORDER_PGBACKREST_USER:-postgres}" -- "$bin" "$@"
fi
exec "$bin" "$@"
