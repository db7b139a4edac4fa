"""`workorder-manage`: Django's manage.py as a console script (like `netbox-manage`)."""

import os
import sys

from workorder.core.env import configuration_errors


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")
    from django.core.management import execute_from_command_line

    with configuration_errors():  # a missing or wrong setting is one actionable line, not a traceback
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
