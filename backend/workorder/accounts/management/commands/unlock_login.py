"""`workorder-manage unlock_login --username U [--address A] | --address A | --all`: lift login lockouts.

--username U             every lock and failure count of U, from every address;
--username U --address A the lock and count of that pair only;
--address A              the address-wide lock and count of A (password spraying limit);
--all                    everything.
"""

import ipaddress

from django.core.management.base import BaseCommand, CommandError

from workorder.accounts import lockout


class Command(BaseCommand):
    help = "Lift login lockouts (accounts/lockout.py) for a username, a username and address, an address, or all."

    def add_arguments(self, parser):
        parser.add_argument("--username")
        parser.add_argument("--address", help="client address, e.g. 203.0.113.7")
        parser.add_argument("--all", action="store_true", dest="everything", help="lift every lock")

    def handle(self, *args, username, address, everything, **options):
        if everything and (username or address):
            raise CommandError("--all takes no --username or --address")
        if not (everything or username or address):
            raise CommandError("give --username (and optionally --address), --address, or --all")
        if address is not None:
            try:
                parsed = ipaddress.ip_address(address.strip())
            except ValueError:
                raise CommandError(f"--address: {address!r} is not an IP address") from None
            address = str(parsed.ipv4_mapped or parsed) if parsed.version == 6 else str(parsed)
        lockout.unlock(username=username, address=address, everything=everything)
        what = ("every login lock" if everything else
                " from ".join(part for part in (f"username {username!r}" if username else "",
                                                f"address {address}" if address else "") if part))
        self.stdout.write(f"unlocked: {what}")
