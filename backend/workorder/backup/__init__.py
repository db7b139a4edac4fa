"""workorder-backup: verified, checksummed, atomically written PostgreSQL + media backups.

Standalone on purpose: it needs DATABASE_URL, the libpq tools (pg_dump, pg_restore) and psycopg2,
never Django settings or DJANGO_SECRET_KEY, so it still works when the application does not.
See docs/backup.md.
"""
