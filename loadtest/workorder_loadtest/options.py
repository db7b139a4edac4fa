"""The suite's own command-line options, shared by the Locust parser (locustfile) and the CLI.

Every option also reads an environment variable (shown in --help), so the Nix app, the stack test
and CI can configure the suite without long command lines. In distributed runs Locust forwards these
values from the master to the workers when the run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    default: Any = None
    type: Any = str
    choices: tuple | None = None
    action: str | None = None  # "append" or "store_true"
    secret: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--password", "WORKORDER_LOADTEST_PASSWORD",
           "password of the seeded load-test accounts (workorder-manage seed_loadtest --password ...)",
           default="", secret=True),
    Option("--account-prefix", "WORKORDER_LOADTEST_ACCOUNT_PREFIX",
           "username prefix of the seeded accounts: <prefix>-<role>-NNNN", default="loadtest"),
    Option("--operators", "WORKORDER_LOADTEST_OPERATORS", "size of the seeded operator pool",
           default=200, type=int),
    Option("--supervisors", "WORKORDER_LOADTEST_SUPERVISORS", "size of the seeded supervisor pool",
           default=50, type=int),
    Option("--makers", "WORKORDER_LOADTEST_MAKERS", "size of the seeded maker pool", default=50, type=int),
    Option("--browser-role", "WORKORDER_LOADTEST_BROWSER_ROLE",
           "role of the accounts WorkOrderUser (the read-mostly browsing user) logs in with",
           default="operator", choices=("operator", "supervisor")),
    Option("--request-timeout", "WORKORDER_LOADTEST_REQUEST_TIMEOUT",
           "seconds before a hung HTTP request (connect or read) counts as a failure", default=10.0, type=float),
    Option("--login-timeout", "WORKORDER_LOADTEST_LOGIN_TIMEOUT",
           "seconds before a login request counts as failed (logins hash passwords: slower by design)",
           default=60.0, type=float),
    Option("--ws-users", "WORKORDER_LOADTEST_WS_USERS",
           "number of NotificationUser (WebSocket) users, taken out of --users (0 disables)",
           default=2, type=int),
    Option("--ws-timeout", "WORKORDER_LOADTEST_WS_TIMEOUT",
           "seconds to wait for the notification of an assignment before counting a failure",
           default=10.0, type=float),
    Option("--ws-path", "WORKORDER_LOADTEST_WS_PATH", "WebSocket path of the notifications consumer",
           default="/ws/notifications/"),
    Option("--sla-file", "WORKORDER_LOADTEST_SLA_FILE", "TOML file with [thresholds] (see docs/loadtest.md)",
           default=""),
    Option("--sla-avg-ms", "WORKORDER_LOADTEST_SLA_AVG_MS", "HTTP average must be < this (ms; default 500)",
           default=None, type=float),
    Option("--sla-p95-ms", "WORKORDER_LOADTEST_SLA_P95_MS", "HTTP p95 must be < this (ms; default 1000)",
           default=None, type=float),
    Option("--sla-error-rate", "WORKORDER_LOADTEST_SLA_ERROR_RATE",
           "HTTP error ratio must be < this (0..1; default 0.001 = 0.1%%)", default=None, type=float),
    Option("--sla", "WORKORDER_LOADTEST_SLA",
           "extra threshold 'TARGET: EXPR[, EXPR]', TARGET = http | ws | login | a request name, "
           "e.g. '[Tasks] List: p(95)<800' (repeatable)", default=None, action="append"),
    Option("--sla-include-login", "WORKORDER_LOADTEST_SLA_INCLUDE_LOGIN",
           "count [Auth] Login requests in the http aggregate (default: gated separately)",
           default=False, action="store_true"),
    Option("--summary-file", "WORKORDER_LOADTEST_SUMMARY_FILE",
           "where to write the JSON summary with the SLA verdict (empty: don't write)", default=""),
)


def add_to_locust_parser(parser) -> None:
    """Register the options on Locust's configargparse parser (init_command_line_parser)."""
    for opt in OPTIONS:
        kwargs: dict[str, Any] = {"env_var": opt.env, "help": opt.help, "default": opt.default}
        if opt.action == "store_true":
            kwargs["action"] = "store_true"
        else:
            if opt.action:
                kwargs["action"] = opt.action
            kwargs["type"] = opt.type
            if opt.choices:
                kwargs["choices"] = opt.choices
        if opt.secret:
            kwargs["is_secret"] = True
        parser.add_argument(opt.flag, **kwargs)


def add_to_argparse(parser) -> None:
    """Register the same options on a plain argparse parser (the CLI), with env defaults."""
    import os

    group = parser.add_argument_group("accounts, WebSocket and SLA (also settable by environment)")
    for opt in OPTIONS:
        env_value = os.environ.get(opt.env)
        help_text = f"{opt.help} [env {opt.env}]"
        if opt.action == "store_true":
            default = env_value.lower() in ("1", "true", "yes", "on") if env_value else opt.default
            group.add_argument(opt.flag, action="store_true", default=default, help=help_text)
        elif opt.action == "append":
            default = [v for v in env_value.split(";") if v.strip()] if env_value else None
            group.add_argument(opt.flag, action="append", type=opt.type, default=default, help=help_text)
        else:
            default = opt.type(env_value) if env_value not in (None, "") else opt.default
            group.add_argument(opt.flag, type=opt.type, default=default, choices=opt.choices, help=help_text)


def to_locust_argv(values: dict[str, Any]) -> list[str]:
    """Turn parsed option values back into Locust command-line arguments."""
    argv: list[str] = []
    for opt in OPTIONS:
        value = values.get(opt.dest)
        if value is None or value == "" or value is False:
            continue
        if opt.action == "store_true":
            argv.append(opt.flag)
        elif opt.action == "append":
            for item in value:
                argv += [opt.flag, str(item)]
        else:
            argv += [opt.flag, str(value)]
    return argv
