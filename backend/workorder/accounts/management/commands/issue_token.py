"""`workorder-manage issue_token USERNAME [--device LABEL]`: print a new API token key for a user.

For operators and tests (e.g. the NixOS VM test's WebSocket check). The key is printed once; only its
digest is stored. It has the lifetime of any login token (docs/api.md).
"""

from django.core.management.base import BaseCommand, CommandError

from workorder.accounts.models import User
from workorder.accounts.tokens import issue_token


class Command(BaseCommand):
    help = "Print a new API token key for USERNAME (counts against the user's token limit)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--device", default="workorder-manage issue_token", help="label stored with the token")

    def handle(self, *args, username, device, **options):
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        _, key = issue_token(user, device=device)
        self.stdout.write(key)
