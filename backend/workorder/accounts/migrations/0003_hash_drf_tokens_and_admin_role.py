"""Upgrade from DRF's authtoken and from "staff means admin".

1. Every row of rest_framework.authtoken's table (plaintext keys) becomes an AuthToken holding only the
   key's SHA-256 digest, valid from now (nobody is logged out by the upgrade); then that table is
   dropped. rest_framework.authtoken is no longer installed, so its table is found by introspection
   and handled with raw SQL; a database that never had it is left as it is.
2. Staff users without a role get the admin role: `User.is_admin` no longer follows is_staff, and no
   one who had admin rights through is_staff loses them.
"""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

DRF_TOKEN_TABLE = "authtoken_token"


def copy_plaintext_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if DRF_TOKEN_TABLE not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("accounts", "AuthToken")
    now = timezone.now()
    expires_at = now + timedelta(seconds=getattr(settings, "WORKORDER_TOKEN_MAX_AGE_SECONDS", 7 * 24 * 3600))
    quote = schema_editor.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')} FROM {quote(DRF_TOKEN_TABLE)}")
        rows = cursor.fetchall()
    AuthToken.objects.bulk_create(
        [
            AuthToken(user_id=user_id, digest=hashlib.sha256(key.encode()).hexdigest(), key_prefix=key[:8],
                      device="", created_at=now, last_used_at=now, expires_at=expires_at)
            for key, user_id in rows
        ],
        ignore_conflicts=True,
    )
    schema_editor.execute(f"DROP TABLE {quote(DRF_TOKEN_TABLE)}")


def give_staff_the_admin_role(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    User.objects.filter(is_staff=True, role="").update(role="admin")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_auth_tokens"),
    ]

    operations = [
        migrations.RunPython(copy_plaintext_tokens, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(give_staff_the_admin_role, migrations.RunPython.noop, elidable=True),
    ]
