"""Login counters, summed over all gunicorn workers (prometheus_client multiprocess mode, like
django-prometheus' own metrics). Alert: WorkorderLoginLockouts (nix/prometheus/workorder.rules.yml)."""

from prometheus_client import Counter

login_failures = Counter(
    "workorder_login_failures_total", "Failed logins (API and admin): wrong username or password")
login_lockouts = Counter(
    "workorder_login_lockouts_total",
    "Lockouts started: scope=account (one username from one address) or address (every username)",
    ["scope"])
password_hashing_refused = Counter(
    "workorder_password_hashing_refused_total",
    "Password checks refused with 503 because every hashing slot of the process stayed busy")
