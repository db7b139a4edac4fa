"""`workorder-daphne`: daphne with the production defaults, configured from the environment.

    DAPHNE_BIND=unix:/run/workorder/daphne.sock workorder-daphne
    DAPHNE_BIND=127.0.0.1:8002 workorder-daphne [extra daphne arguments, which win over the defaults]
    workorder-daphne --check [extra daphne arguments]

`--check` does everything but serve: it loads the settings and the ASGI application and parses the
full command line with the installed daphne's own parser, so a daphne too old for an option (the
WebSocket size limits need daphne >= 4.2.2) fails here, naming the version, instead of in a
crash-looping unit. Serving runs the same check first.

daphne runs in this process (daphne.cli.CommandLineInterface, no wrapper shell), so SIGTERM reaches
Twisted's reactor directly and shuts it down cleanly.

The client's address: daphne's own --proxy-headers would believe X-Real-IP from any peer, so it is
off; the application's rule (core/client_address.py: X-Real-IP only from a unix-socket peer or one in
WORKORDER_TRUSTED_PROXY_NETWORKS) sets the scope's client (workorder.asgi) and, through the server
class here, the address in daphne's access log. daphne listens on a unix socket or loopback, or on
another address (a node behind a balancer) only once WORKORDER_TRUSTED_PROXY_NETWORKS names the
balancers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import sys
from importlib import import_module
from urllib.parse import urlsplit, urlunsplit

from workorder.core.env import ConfigurationError, configuration_errors, env

DEFAULT_BIND = "127.0.0.1:8002"
APPLICATION = "workorder.asgi:application"

# Long-lived connections behind nginx (proxy_read_timeout 60s by default): a ping every 20s keeps
# the proxied connection busy; a client that does not answer within 30s is dropped.
DEFAULT_ARGS = [
    "--ping-interval", "20",
    "--ping-timeout", "30",
    "--websocket_timeout", "86400",  # a connection lives at most a day; clients reconnect
    "--websocket_connect_timeout", "10",  # handshake must finish within 10s
    "--application-close-timeout", "10",
    "--http-timeout", "60",
    # Client -> server messages are tiny ({"action": "mark_read", "id": 1}): 64 KiB is plenty.
    "--websocket-max-message-size", str(64 * 1024),
    "--websocket-max-frame-size", str(64 * 1024),
    "--no-server-name",
    "--verbosity", "1",
]


def bind_args(bind: str, environ=None) -> list[str]:
    """DAPHNE_BIND -> daphne arguments. A unix socket or loopback TCP; another address only with
    WORKORDER_TRUSTED_PROXY_NETWORKS set (the balancers whose X-Real-IP is believed)."""
    bind = bind.strip()
    if bind.startswith("unix:"):
        path = bind[len("unix:"):]
        if not path.startswith("/"):
            raise ConfigurationError(f"DAPHNE_BIND={bind!r}: the unix socket path must be absolute")
        # A Twisted endpoint string, so the socket is 0660 (owner and group, i.e. nginx via its
        # supplementary group) like gunicorn's, instead of daphne -u's 0666.
        escaped = path.replace("\\", "\\\\").replace(":", "\\:")
        return ["-e", f"unix:{escaped}:mode=660"]
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"DAPHNE_BIND={bind!r}: expected unix:/path or host:port")
    host = host.strip("[]")
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigurationError(f"DAPHNE_BIND={bind!r}: host must be an IP address") from None
        if not address.is_loopback and not env("WORKORDER_TRUSTED_PROXY_NETWORKS", environ=environ):
            raise ConfigurationError(
                f"DAPHNE_BIND={bind!r}: daphne listens beyond loopback only behind a balancer: set "
                "WORKORDER_TRUSTED_PROXY_NETWORKS to the balancers' addresses (their X-Real-IP is believed)"
            )
    return ["-b", host, "-p", port]


def remove_stale_socket(path: str) -> None:
    """A unix socket file left by a crashed daphne makes the next bind fail; remove it if nobody listens."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise ConfigurationError(f"{path}: another process already listens on this socket")
    finally:
        probe.close()


def unix_socket_path(bind: str) -> str | None:
    bind = bind.strip()
    return bind[len("unix:"):] if bind.startswith("unix:") else None


def daphne_bind(environ=None) -> str:
    return env("DAPHNE_BIND", DEFAULT_BIND, environ=environ)


def build_argv(extra: list[str], environ=None) -> list[str]:
    args = bind_args(daphne_bind(environ), environ)
    # Extra arguments come last: argparse keeps the last value, so they override the defaults.
    return [*args, *DEFAULT_ARGS, *extra, APPLICATION]


def daphne_version() -> str:
    import daphne

    return getattr(daphne, "__version__", "unknown")


def check_daphne_argv(daphne_argv: list[str]) -> None:
    """Parse the command line with daphne's own parser; anything it rejects is a ConfigurationError."""
    from daphne.cli import CommandLineInterface

    parser = CommandLineInterface().parser

    def refuse(message: str):
        raise ConfigurationError(f"daphne {daphne_version()} rejects the command line: {message}")

    parser.error = refuse
    _, unknown = parser.parse_known_args(daphne_argv)
    if unknown:
        refuse(f"unrecognized arguments: {' '.join(unknown)} (the WebSocket size limits need daphne >= 4.2.2)")


def strip_query(path):
    """The path without its query string: ?token=... must never reach a log line."""
    if isinstance(path, bytes):
        path = path.decode("latin1")
    if not isinstance(path, str) or "?" not in path:
        return path
    parts = urlsplit(path)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _sanitizing_server_class():
    from daphne.server import Server

    from workorder.core.client_address import trusted_client

    class WorkorderDaphneServer(Server):
        """daphne's Server whose access log never sees a query string and names the client by the
        application's rule (X-Real-IP only from a trusted balancer), like the scope does."""

        def create_application(self, protocol, scope):
            client = trusted_client(scope)
            if client is not None:
                scope = {**scope, "client": client}
                protocol.client_addr = client
            return super().create_application(protocol, scope)

        def __init__(self, *args, action_logger=None, **kwargs):
            if action_logger is not None:
                inner = action_logger

                def action_logger(protocol, action, details):
                    if "path" in details:
                        details = {**details, "path": strip_query(details["path"])}
                    return inner(protocol, action, details)

            super().__init__(*args, action_logger=action_logger, **kwargs)

    return WorkorderDaphneServer


def check_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")
    from django.conf import settings

    settings.SECRET_KEY  # noqa: B018 - forces the settings module to load


def main(argv: list[str] | None = None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)
    check_only = extra[:1] == ["--check"]
    if check_only:
        extra = extra[1:]
    with configuration_errors():
        check_settings()
        daphne_argv = build_argv(extra)
        check_daphne_argv(daphne_argv)
        if check_only:
            import_module(APPLICATION.partition(":")[0])
            print(f"workorder-daphne: daphne {daphne_version()} accepts: {' '.join(daphne_argv)}")
            return
        socket_path = unix_socket_path(daphne_bind())
        if socket_path:
            remove_stale_socket(socket_path)

    from daphne.cli import CommandLineInterface

    cli = CommandLineInterface()
    cli.server_class = _sanitizing_server_class()
    # daphne's access log goes to stdout: one line per event, flushed at once (journald, log files).
    sys.stdout.reconfigure(line_buffering=True)
    cli.run(daphne_argv)


if __name__ == "__main__":
    main()
