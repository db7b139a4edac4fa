"""A password change or a deactivation revokes every API token of the user.

Compares the stored password hash and is_active with the ones being saved (one query, skipped when
update_fields leaves both out, e.g. the admin login's last_login update). The rehash Django does at
login when the preferred hasher changed (PBKDF2 -> Argon2id) is not a change (User.check_password).
Any other saved or deleted user (a new role or department, ...) tells every server process to drop its
copies of the user's token lookups (accounts/token_cache.py); the admin login's last_login update does not.
Bulk QuerySet.update() sends no signals: code that deactivates users in bulk calls tokens.revoke_all(),
code that changes them otherwise token_cache.changed().
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from . import token_cache
from .models import User
from .tokens import revoke_all

WATCHED_FIELDS = {"password", "is_active"}


@receiver(pre_save, sender=User, dispatch_uid="accounts.tokens.note_credentials_change")
def note_credentials_change(sender, instance: User, raw=False, update_fields=None, **kwargs):
    instance._revoke_tokens_after_save = False
    if raw or instance.pk is None or getattr(instance, "_rehashing_password", False):
        return
    if update_fields is not None and not (WATCHED_FIELDS & set(update_fields)):
        return
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    changed_password = before["password"] != instance.password
    deactivated = before["is_active"] and not instance.is_active
    instance._revoke_tokens_after_save = changed_password or deactivated


@receiver(post_save, sender=User, dispatch_uid="accounts.tokens.revoke_after_credentials_change")
def revoke_after_credentials_change(sender, instance: User, created=False, raw=False, using=DEFAULT_DB_ALIAS,
                                    update_fields=None, **kwargs):
    if getattr(instance, "_revoke_tokens_after_save", False):
        instance._revoke_tokens_after_save = False
        revoke_all(instance)  # tokens_revoked is sent once the transaction commits
    elif not (created or raw or (update_fields is not None and set(update_fields) <= {"last_login"})):
        token_cache.changed(instance.pk, using)


@receiver(post_delete, sender=User, dispatch_uid="accounts.tokens.forget_deleted_user")
def forget_deleted_user(sender, instance: User, using=DEFAULT_DB_ALIAS, **kwargs):
    token_cache.changed(instance.pk, using)
