"""Settings, all from the environment (12-factor), read with workorder/core/env.py's helpers (the same
rules as gunicorn's config, daphne and the backup tool). Every variable is documented in docs/runtime.md.

Embedded default (no DATABASE_URL, no REDIS_URL): SQLite in the state directory, in-process cache
and channel layer. Production: DATABASE_URL (PostgreSQL), REDIS_URL, DJANGO_SECRET_KEY(_FILE).
"""

import ipaddress
from pathlib import Path

import dj_database_url

from workorder.core.env import ConfigurationError, env, env_bool, env_int, env_list, env_secret, redis_url_with_password

STATE_DIR = Path(env("WORKORDER_STATE_DIR", str(Path.home() / ".local/state/workorder")))

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigurationError(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set; it is required unless DJANGO_DEBUG=1"
        )
    SECRET_KEY = "dev-only-insecure-key-never-use-in-production"

# Application nodes sharing this database and Redis (docs/runtime.md, "Several nodes"). Tokens are
# hashed, sessions and CSRF tokens signed with SECRET_KEY: every node needs the same key, so with more
# than one node it must be given explicitly, never the development key nor one generated per node
# into its own state directory.
WORKORDER_NODES = env_int("WORKORDER_NODES", 1)
if WORKORDER_NODES < 1:
    raise ConfigurationError(f"WORKORDER_NODES must be at least 1, got {WORKORDER_NODES}")
if WORKORDER_NODES > 1:
    _key_file = env("DJANGO_SECRET_KEY_FILE")
    if not env_secret("DJANGO_SECRET_KEY"):
        raise ConfigurationError(f"WORKORDER_NODES={WORKORDER_NODES}: every node needs the same secret key; "
                                 "set DJANGO_SECRET_KEY_FILE (or DJANGO_SECRET_KEY) to the key shared by all nodes")
    if _key_file and Path(_key_file).resolve().is_relative_to(STATE_DIR.resolve()):
        raise ConfigurationError(f"WORKORDER_NODES={WORKORDER_NODES}: DJANGO_SECRET_KEY_FILE={_key_file} lies in this "
                                 "node's state directory (a key generated per node); give every node the same key file")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files (collectstatic), no CDN
    "channels",
    "django_prometheus",
    "workorder.core",
    "workorder.catalog",
    "workorder.accounts",
    "workorder.production",
    "workorder.notifications",
    "workorder.statistics",
]

MIDDLEWARE = [
    "workorder.core.shedding.QueueDeadlineMiddleware",  # 503 for requests queued too long, before any work
    "workorder.core.middleware.OperationalEndpointsMiddleware",  # /health/ /ready/ /metrics/ (see module)
    "workorder.core.edge.RequestBodyLimitMiddleware",  # 413 JSON by Content-Length, before anything reads
    "workorder.core.edge.HostValidationMiddleware",  # a Host outside ALLOWED_HOSTS: 400 JSON, no traceback
    "workorder.core.edge.ContentSecurityPolicyMiddleware",  # /api/docs/, /api/redoc/, /admin/
    "django.middleware.security.SecurityMiddleware",
    # Sessions, request.user and messages serve the admin; the API (tokens, no cookies) skips them.
    "workorder.core.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "workorder.core.middleware.AuthenticationMiddleware",
    "workorder.accounts.lockout.LoginLockedOutMiddleware",  # a locked-out login is 429, API and admin alike
    "workorder.core.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so that its latency covers URL resolution, every process_view and the view; the
    # operational endpoints, shed and edge-refused requests above are not counted (see module).
    "workorder.core.request_metrics.RequestMetricsMiddleware",
]

ROOT_URLCONF = "workorder.urls"
WSGI_APPLICATION = "workorder.wsgi.application"
ASGI_APPLICATION = "workorder.asgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -------------------------------------------------------------------------------
# Django's own backends, not django-prometheus' instrumented ones: those update three series on every
# query (about 30 us of CPU each in multiprocess mode) for django_db_* metrics that no rule, test or
# runbook reads.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    _db = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 300),
        conn_health_checks=True,
    )
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with a health check that needs no round trip (core/postgresql/base.py).
        _db["ENGINE"] = "workorder.core.postgresql"
        _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
    _password = env_secret("DATABASE_PASSWORD")
    if _password:
        _db["PASSWORD"] = _password
else:
    # The embedded default: SQLite cannot create the directory its file lives in, so create it here
    # (a fresh checkout has none) or say in one line which directory cannot be created.
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the state directory {STATE_DIR} (WORKORDER_STATE_DIR): {exc.strerror}"
        ) from None
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(STATE_DIR / "workorder.sqlite3"),
        # SQLite has one writer at a time. IMMEDIATE: every transaction takes the write lock when it
        # begins and waits up to `timeout` seconds for it (a DEFERRED one that reads first, then
        # writes, cannot wait: it fails at once with "database is locked"). WAL: readers never block
        # the writer nor it them; synchronous=NORMAL is durable across crashes of the process in WAL.
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        },
    }
DATABASES = {"default": _db}

# --- Cache and channel layer ----------------------------------------------------------------
# REDIS_PASSWORD(_FILE) or the systemd credential redis_password goes into the URL's userinfo, so
# every client of settings.REDIS_URL authenticates (cache, channel layer, health, connections).
REDIS_URL = redis_url_with_password(env("REDIS_URL"), env_secret("REDIS_PASSWORD"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "workorder.core.cache.PrometheusRedisCache",  # no django-redis needed
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "workorder",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # socket_timeout must exceed channels_redis' BZPOPMIN block (brpop_timeout = 5 s):
                # redis-py 8 defaults socket_timeout to 5 s, so the read raced the server's 5 s block,
                # raised TimeoutError inside the consumer and daphne dropped the WebSocket.
                "hosts": [{"address": REDIS_URL, "socket_connect_timeout": 2, "socket_timeout": 15}],
                "prefix": "workorder",
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# WebSocket limits (notifications/consumers.py): open sockets per user over all daphne processes,
# and a token bucket of client messages per socket.
WORKORDER_WS_MAX_CONNECTIONS_PER_USER = env_int("WORKORDER_WS_MAX_CONNECTIONS_PER_USER", 10)
WORKORDER_WS_MESSAGES_PER_SECOND = env_int("WORKORDER_WS_MESSAGES_PER_SECOND", 5)
WORKORDER_WS_MESSAGE_BURST = env_int("WORKORDER_WS_MESSAGE_BURST", 20)
for _name in ("WORKORDER_WS_MAX_CONNECTIONS_PER_USER", "WORKORDER_WS_MESSAGES_PER_SECOND",
              "WORKORDER_WS_MESSAGE_BURST"):
    if globals()[_name] < 1:
        raise ConfigurationError(f"{_name} must be at least 1, got {globals()[_name]}")

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Argon2id (OWASP: 19 MiB, t=2, p=1) for new hashes; PBKDF2 hashes still verify and are rehashed with
# Argon2id at the next successful login. Both run under the per-process hashing cap (accounts/hashers.py).
PASSWORD_HASHERS = [
    "workorder.accounts.hashers.BoundedArgon2PasswordHasher",
    "workorder.accounts.hashers.BoundedPBKDF2PasswordHasher",
]
# Password checks at once per process; more wait up to WORKORDER_PASSWORD_HASH_WAIT_MS, then 503.
WORKORDER_PASSWORD_HASH_CONCURRENCY = env_int("WORKORDER_PASSWORD_HASH_CONCURRENCY", 1)
WORKORDER_PASSWORD_HASH_WAIT_MS = env_int("WORKORDER_PASSWORD_HASH_WAIT_MS", 2000)
# Login throttling (accounts/lockout.py), for the API and the admin login.
AUTHENTICATION_BACKENDS = ["workorder.accounts.lockout.LockoutModelBackend"]
WORKORDER_LOGIN_FAILURES_PER_ACCOUNT = env_int("WORKORDER_LOGIN_FAILURES_PER_ACCOUNT", 30)
WORKORDER_LOGIN_FAILURES_PER_ADDRESS = env_int("WORKORDER_LOGIN_FAILURES_PER_ADDRESS", 300)
WORKORDER_LOGIN_FAILURE_WINDOW_SECONDS = env_int("WORKORDER_LOGIN_FAILURE_WINDOW_SECONDS", 900)
WORKORDER_LOGIN_LOCKOUT_SECONDS = env_int("WORKORDER_LOGIN_LOCKOUT_SECONDS", 900)
# API tokens (accounts/tokens.py).
WORKORDER_TOKEN_IDLE_SECONDS = env_int("WORKORDER_TOKEN_IDLE_SECONDS", 12 * 3600)
WORKORDER_TOKEN_MAX_AGE_SECONDS = env_int("WORKORDER_TOKEN_MAX_AGE_SECONDS", 7 * 24 * 3600)
WORKORDER_TOKENS_PER_USER = env_int("WORKORDER_TOKENS_PER_USER", 10)
# Valid token lookups kept per process, dropped everywhere on any change (accounts/token_cache.py); 0: off.
WORKORDER_TOKEN_CACHE_SECONDS = env_int("WORKORDER_TOKEN_CACHE_SECONDS", 30)
if WORKORDER_TOKEN_CACHE_SECONDS < 0:
    raise ConfigurationError(f"WORKORDER_TOKEN_CACHE_SECONDS must not be negative, got {WORKORDER_TOKEN_CACHE_SECONDS}")
for _name in ("WORKORDER_PASSWORD_HASH_CONCURRENCY", "WORKORDER_LOGIN_FAILURES_PER_ACCOUNT",
              "WORKORDER_LOGIN_FAILURES_PER_ADDRESS", "WORKORDER_LOGIN_FAILURE_WINDOW_SECONDS",
              "WORKORDER_LOGIN_LOCKOUT_SECONDS", "WORKORDER_TOKEN_IDLE_SECONDS",
              "WORKORDER_TOKEN_MAX_AGE_SECONDS", "WORKORDER_TOKENS_PER_USER"):
    if globals()[_name] < 1:
        raise ConfigurationError(f"{_name} must be at least 1, got {globals()[_name]}")
if WORKORDER_PASSWORD_HASH_WAIT_MS < 0:
    raise ConfigurationError(f"WORKORDER_PASSWORD_HASH_WAIT_MS must not be negative, got {WORKORDER_PASSWORD_HASH_WAIT_MS}")
# Peers (TCP address; a unix-socket peer always is one) whose X-Real-IP names the client: nginx.
WORKORDER_TRUSTED_PROXY_NETWORKS = env_list("WORKORDER_TRUSTED_PROXY_NETWORKS", "127.0.0.0/8,::1/128")
# Requests that waited longer than this in gunicorn's queue (nginx's X-Request-Start) are shed with a
# fast 503 (core/shedding.py); 0 turns shedding off.
WORKORDER_QUEUE_DEADLINE_MS = env_int("WORKORDER_QUEUE_DEADLINE_MS", 800)
if WORKORDER_QUEUE_DEADLINE_MS < 0:
    raise ConfigurationError(f"WORKORDER_QUEUE_DEADLINE_MS must not be negative, got {WORKORDER_QUEUE_DEADLINE_MS}")
# May a supervisor approve a work order they created themselves? (Admins always may.)
WORKORDER_ALLOW_SELF_APPROVAL = env_bool("WORKORDER_ALLOW_SELF_APPROVAL", False)

# --- Internationalisation, static and media files -------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = env("STATIC_ROOT", str(STATE_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = env("MEDIA_ROOT", str(STATE_DIR / "media"))
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Tokens only: the admin keeps its session login, the API takes no cookies (docs/api.md).
        "workorder.accounts.authentication.ExpiringTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "workorder.core.pagination.StandardPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "workorder.core.filtering.FilterBackend",  # DjangoFilterBackend, no FilterSet when nothing is filtered
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "workorder.core.exceptions.json_exception_handler",
    # JSON (and form-encoded, read whole under DATA_UPLOAD_MAX_MEMORY_SIZE); no multipart: the API takes
    # no files, and multipart file parts are streamed past Django's memory limit.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser", "rest_framework.parsers.FormParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",  # APIClient's default (multipart) is not accepted
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "workorder API",
    "DESCRIPTION": "Work orders, tasks, progress reports and notifications for the shop floor.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from our own /static/ (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "workorder.production.states.TaskStatus",
        "WorkOrderStatusEnum": "workorder.production.states.WorkOrderStatus",
        "ApprovalStatusEnum": "workorder.production.states.ApprovalStatus",
        "PriorityEnum": "workorder.production.models.Priority",
        "RoleEnum": "workorder.accounts.models.Role",
        "NotificationKindEnum": "workorder.notifications.models.NotificationKind",
    },
}

# Seconds the statistics endpoints may serve a cached answer (docs/api.md, "Statistics").
STATISTICS_CACHE_SECONDS = env_int("WORKORDER_STATISTICS_CACHE_SECONDS", 5)
# The most of one database connection's time the background refresh of one statistic may take, in
# percent: an answer that took 0.3 s to compute stays fresh for at least 0.3 s x 100 / 2 = 15 s, so the
# refreshes' cost stays bounded as the task table grows (statistics/views.py).
STATISTICS_REFRESH_PERCENT = env_int("WORKORDER_STATISTICS_REFRESH_PERCENT", 2)
if not 1 <= STATISTICS_REFRESH_PERCENT <= 100:
    raise ConfigurationError(f"WORKORDER_STATISTICS_REFRESH_PERCENT must be 1 to 100, got {STATISTICS_REFRESH_PERCENT}")
# Seconds each server process may answer a reference list (the catalog's, the users') from its memory:
# an edit in the admin shows in the lists within this time (core/api.py ReferenceListMixin).
REFERENCE_CACHE_SECONDS = env_int("WORKORDER_REFERENCE_CACHE_SECONDS", 10)

# --- Security behind a TLS-terminating proxy ------------------------------------------------
BEHIND_TLS = env_bool("WORKORDER_BEHIND_TLS", False)
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a commitment made at hstspreload.org, opted into with SECURE_HSTS_PRELOAD=1.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
# /health/ and /ready/ are probed over plain HTTP on loopback, never redirected.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^ready/$", r"^metrics/?$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Metrics --------------------------------------------------------------------------------
# Networks allowed to scrape /metrics/ without a token; a bearer token (file) allows any client.
METRICS_ALLOWED_NETWORKS = env_list("WORKORDER_METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
METRICS_TOKEN = env_secret("WORKORDER_METRICS_TOKEN")
for _variable, _networks in (("WORKORDER_METRICS_ALLOWED_NETWORKS", METRICS_ALLOWED_NETWORKS),
                              ("WORKORDER_TRUSTED_PROXY_NETWORKS", WORKORDER_TRUSTED_PROXY_NETWORKS)):
    for _network in _networks:
        try:
            ipaddress.ip_network(_network, strict=False)
        except ValueError:
            raise ConfigurationError(f"{_variable}: {_network!r} is not a network (e.g. 127.0.0.0/8)") from None
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Logging: one line per event on stderr (journald adds time and unit) ---------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["stderr"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
