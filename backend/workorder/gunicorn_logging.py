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

from gunicorn.glogging import Logger, SafeAtoms


def escape(value: str) -> str:
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
    def __init__(self, atoms):
        super().__init__({key: escape(value) if isinstance(value, str) else value for key, value in atoms.items()})


class EscapingLogger(Logger):
    atoms_wrapper_class = EscapedAtoms
