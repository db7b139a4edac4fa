"""`workorder-manage prune_idempotency_keys`: delete Idempotency-Key records older than 24 hours.

Run hourly by the NixOS module's workorder-prune-idempotency-keys timer (on one node only: option
services.workorder.singletonJobs). Expired keys already count as new requests; pruning only keeps
the table small.
"""

from django.core.management.base import BaseCommand, CommandError

from workorder.core import idempotency


class Command(BaseCommand):
    help = "Delete stored Idempotency-Key outcomes older than 24 hours (they no longer replay)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=10_000,
                            help="rows deleted per transaction (default 10000)")

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        deleted = idempotency.prune_expired(batch_size=batch_size)
        self.stdout.write(f"removed {deleted} expired idempotency key(s)")
