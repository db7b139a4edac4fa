"""Configuration from the environment (workorder/core/env.py): one set of rules, one error line.

Every entry point (workorder-manage and the settings, gunicorn's config, workorder-daphne,
workorder-backup) ends a configuration error with exactly one line,
`workorder: configuration error: <reason>`, and exit status 2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.runtime_support import script, server_env
from workorder.core import env


def test_blank_values_are_unset_and_values_are_stripped():
    environ = {"A": "  value  ", "B": "", "C": "   "}
    assert env.env("A", environ=environ) == "value"
    assert env.env("B", "default", environ=environ) == "default"
    assert env.env("C", "default", environ=environ) == "default"
    assert env.env("MISSING", environ=environ) is None
    assert env.env_list("L", environ={"L": " a, ,b ,"}) == ["a", "b"]


def test_numbers_and_booleans_are_checked():
    assert env.env_int("N", 3, environ={"N": " 12 "}) == 12
    assert env.env_int("N", 3, environ={}) == 3
    with pytest.raises(env.ConfigurationError, match="^N must be an integer, got '1.5'$"):
        env.env_int("N", 3, environ={"N": "1.5"})
    assert env.env_bool("B", environ={"B": "Yes"}) is True
    assert env.env_bool("B", environ={"B": "off"}) is False
    assert env.env_bool("B", True, environ={}) is True
    with pytest.raises(env.ConfigurationError, match="^B must be true or false, got 'maybe'$"):
        env.env_bool("B", environ={"B": "maybe"})


def test_secret_lookup_order_is_file_then_variable_then_systemd_credential(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "database_password").write_text("from-credential\n")
    everything = {"DATABASE_PASSWORD_FILE": str(secret_file), "DATABASE_PASSWORD": "from-variable",
                  "CREDENTIALS_DIRECTORY": str(credentials)}
    assert env.env_secret("DATABASE_PASSWORD", environ=everything) == "from-file"
    without_file = {k: v for k, v in everything.items() if k != "DATABASE_PASSWORD_FILE"}
    assert env.env_secret("DATABASE_PASSWORD", environ=without_file) == "from-variable"
    only_credential = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert env.env_secret("DATABASE_PASSWORD", environ=only_credential) == "from-credential"
    assert env.env_secret("OTHER_SECRET", environ=only_credential) is None
    with pytest.raises(env.ConfigurationError, match=r"^X_FILE=/nonexistent/x cannot be read: No such file"):
        env.env_secret("X", environ={"X_FILE": "/nonexistent/x"})


def test_configuration_errors_end_with_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as exited, env.configuration_errors():
        raise env.ConfigurationError("GUNICORN_WORKERS must be\nan integer")
    assert exited.value.code == 2
    assert capsys.readouterr().err == "workorder: configuration error: GUNICORN_WORKERS must be an integer\n"
    with pytest.raises(ValueError), env.configuration_errors():  # anything else is not a configuration error
        raise ValueError("a bug")


def test_env_module_needs_no_django():
    code = "import sys, workorder.core.env; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


ENTRY_POINTS = {
    "settings via workorder-manage": ([script("workorder-manage"), "check"], {"DJANGO_DEBUG": "maybe"},
                                      "DJANGO_DEBUG must be true or false, got 'maybe'"),
    "gunicorn config": ([script("python"), "-c", "import workorder.gunicorn_conf"], {"GUNICORN_WORKERS": "many"},
                        "GUNICORN_WORKERS must be an integer, got 'many'"),
    "gunicorn config, settings": ([script("python"), "-c", "import workorder.gunicorn_conf"],
                                  {"WORKORDER_METRICS_ALLOWED_NETWORKS": "everyone"},
                                  "WORKORDER_METRICS_ALLOWED_NETWORKS: 'everyone' is not a network (e.g. 127.0.0.0/8)"),
    "settings, a range": ([script("workorder-manage"), "check"], {"WORKORDER_STATISTICS_REFRESH_PERCENT": "0"},
                          "WORKORDER_STATISTICS_REFRESH_PERCENT must be 1 to 100, got 0"),
    "settings, not negative": ([script("workorder-manage"), "check"], {"WORKORDER_TOKEN_CACHE_SECONDS": "-1"},
                               "WORKORDER_TOKEN_CACHE_SECONDS must not be negative, got -1"),
    "workorder-daphne": ([script("workorder-daphne"), "--check"], {"DJANGO_DEBUG": "maybe"},
                         "DJANGO_DEBUG must be true or false, got 'maybe'"),
    "workorder-backup": ([script("workorder-backup"), "list"], {},
                         "no backup directory: set WORKORDER_BACKUP_DIR or pass --directory"),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_every_entry_point_reports_a_configuration_error_the_same_way(tmp_path, name):
    argv, extra, reason = ENTRY_POINTS[name]
    environ = server_env(tmp_path, None, None, **extra)
    result = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert (result.returncode, lines) == (2, [f"workorder: configuration error: {reason}"])
