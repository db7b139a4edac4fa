"""Configuration from the environment: one set of rules for every entry point.

Used by settings.py, gunicorn_conf.py, daphne_main.py and the backup tool. Standard library only, so it
is importable before (and without) Django settings; the backup tool never loads Django.

Rules:
- a variable that is unset, empty or only whitespace is unset (the default applies); values are stripped;
- integers and booleans (1/true/yes/on, 0/false/no/off) are checked: anything else is a
  ConfigurationError naming the variable and the value;
- a secret NAME comes from the first of: the file named by NAME_FILE; NAME itself; the systemd
  credential named like the variable in lower case ($CREDENTIALS_DIRECTORY/name, e.g.
  `LoadCredential=django_secret_key:/run/secrets/key`), which the NixOS module's *File options use.

Every entry point ends a configuration error the same way: one line on stderr,
`workorder: configuration error: <reason>`, and exit status 2 (`configuration_errors()`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

EXIT_CONFIGURATION = 2
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigurationError(Exception):
    """A missing or malformed setting. str(error) is the one-line reason."""


def env(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default


def env_int(name: str, default: int, *, environ: Mapping[str, str] | None = None) -> int:
    value = env(name, environ=environ)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None


def env_bool(name: str, default: bool = False, *, environ: Mapping[str, str] | None = None) -> bool:
    value = env(name, environ=environ)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def env_list(name: str, default: str = "", *, environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    return [item.strip() for item in (env(name, default, environ=environ) or "").split(",") if item.strip()]


def env_secret(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """NAME_FILE, then NAME, then $CREDENTIALS_DIRECTORY/<name in lower case> (see the module docstring)."""
    path = env(f"{name}_FILE", environ=environ)
    if path:
        return _read_secret(Path(path), f"{name}_FILE={path}")
    value = env(name, environ=environ)
    credentials = env("CREDENTIALS_DIRECTORY", environ=environ)
    if value is None and credentials:
        credential = Path(credentials) / name.lower()
        if credential.is_file():
            return _read_secret(credential, f"systemd credential {credential}")
    return value


def redis_url_with_password(url: str | None, password: str | None) -> str | None:
    """REDIS_URL with REDIS_PASSWORD (env_secret: *_FILE, variable, systemd credential) as its
    userinfo, so every client that takes the URL (the cache, channels-redis, health checks,
    connection counting) authenticates: `unix:///run/redis-workorder/redis.sock?db=0` ->
    `unix://:<password>@/run/redis-workorder/redis.sock?db=0`. A URL that already carries a password
    and a REDIS_PASSWORD as well is a configuration error (which one would win is not obvious)."""
    if not url or not password:
        return url
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigurationError("REDIS_URL already contains a password; set it there or in REDIS_PASSWORD(_FILE), not both")
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username, safe="") if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"{what} cannot be read: {exc.strerror}") from None


def one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or type(reason).__name__


def exit_with_configuration_error(reason: object, status: int = EXIT_CONFIGURATION) -> NoReturn:
    print(f"workorder: configuration error: {one_line(reason)}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def _configuration_error_types() -> tuple[type[BaseException], ...]:
    """ConfigurationError, plus Django's ImproperlyConfigured once Django is loaded (never imported here)."""
    django_exceptions = sys.modules.get("django.core.exceptions")
    if django_exceptions is None:
        return (ConfigurationError,)
    return (ConfigurationError, django_exceptions.ImproperlyConfigured)


@contextmanager
def configuration_errors(status: int = EXIT_CONFIGURATION) -> Iterator[None]:
    """Run the block; a configuration error in it ends the process with one line and `status`."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, _configuration_error_types()):
            exit_with_configuration_error(exc, status)
        raise


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# gunicorn's defaults (gunicorn_conf.py), here so that the test harness starts what the package starts:
# CPUs + 1 gthread workers of 4 threads (docs/runtime.md, "Workers and threads").
DEFAULT_GUNICORN_THREADS = 4


def default_gunicorn_workers() -> int:
    return cpu_count() + 1
