"""The suite's options, on Locust's own parser. Each also reads ``WORKORDER_LOADTEST_<OPTION>`` and
Locust's config files; Locust hands them to its workers when a distributed run starts."""

from locust import events


@events.init_command_line_parser.add_listener
def add_options(parser, **_kwargs) -> None:
    def option(flag: str, text: str, **kwargs) -> None:
        env = "WORKORDER_LOADTEST_" + flag[2:].upper().replace("-", "_")
        parser.add_argument(flag, env_var=env, help=f"{text} [env {env}]", **kwargs)

    option("--password", "password of the seeded accounts (seed_loadtest --password)", default="", is_secret=True)
    option("--account-prefix", "username prefix of the seeded accounts: <prefix>-<role>-NNNN", default="loadtest")
    option("--operators", "size of the seeded operator pool", type=int, default=200)
    option("--supervisors", "size of the seeded supervisor pool", type=int, default=50)
    option("--makers", "size of the seeded maker pool", type=int, default=50)
    option("--browser-role", "the accounts WorkOrderUser uses", choices=("operator", "supervisor"), default="operator")
    option("--request-timeout", "seconds before a hung API request counts as failed", type=float, default=10.0)
    option("--login-timeout", "seconds before a login (slow: it hashes) counts as failed", type=float, default=60.0)
    option("--skip-preflight", "don't try the first and last account of every pool first", action="store_true")
    option("--ws-users", "number of WebSocket users, taken out of --users (0: none)", type=int, default=2)
    option("--ws-timeout", "seconds to wait for the notification of an assignment", type=float, default=10.0)
    option("--ws-path", "WebSocket path of the notifications consumer", default="/ws/notifications/")
    option("--sla-file", "TOML file with a [thresholds] table (docs/loadtest.md)", default="")
    option("--sla-avg-ms", "the http average must be < this (ms; default 500)", type=float)
    option("--sla-p95-ms", "the http p95 must be < this (ms; default 1000)", type=float)
    option("--sla-error-rate", "the http error ratio must be < this (0..1; default 0.001)", type=float)
    option("--sla", "'TARGET: EXPR[, EXPR]', e.g. '[Tasks] List: p(95)<800' (repeatable; env: a JSON list)",
           action="append")
    option("--sla-include-login", "count [Auth] Login requests in the http group", action="store_true")
    option("--settle-time", "with --reset-stats: seconds after the last user has started before the statistics "
           "reset, so the last users' logins and first requests count as ramp-up (0: at once, like Locust)",
           type=float, default=0.0)
    option("--summary-file", "where to write summary.json with the SLA verdict (empty: nowhere)", default="")
