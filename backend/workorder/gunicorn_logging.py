"""gunicorn's logger with access-log fields that cannot forge or garble a line.

gunicorn writes the decoded path (%(U)s, WSGI's PATH_INFO), the User-Agent and any other header as
they came, escaping only '"'. A request for /api/%0aINFO%20gunicorn.access%20... would write a line
break and a made-up second line into the log; a \\x1b in a header drives the terminal of whoever
reads the log. Every string field is escaped like nginx's access log does: '"' and '\\' and every
non-printable character (control characters, DEL, C1 controls, line and paragraph separators,
bidirectional overrides) become \\xNN / \\uNNNN, so one request is always exactly one line.

Used by workorder.gunicorn_conf (logger_class).
"""

from __future__ import annotations

import re

from gunicorn.glogging import Logger, SafeAtoms

_PLAIN = re.compile(r'[ !#-\[\]-~]*\Z')  # printable ASCII but '"' and '\\': written as it is


def escape(value: str) -> str:
    if _PLAIN.match(value):
        return value
    out = []
    for char in value:
        if char in '"\\':
            out.append(f"\\x{ord(char):02x}")
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


class EscapedAtoms(SafeAtoms):
    """Escapes the fields the format reads, when it reads them: gunicorn's atoms hold every request
    header and WSGI variable (~50 strings), the access log format uses eight."""

    def __init__(self, atoms):
        dict.__init__(self, atoms)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        return escape(value) if isinstance(value, str) else value


class EscapingLogger(Logger):
    atoms_wrapper_class = EscapedAtoms
