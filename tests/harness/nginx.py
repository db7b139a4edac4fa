"""nginx in front of gunicorn and daphne, with the layout of the NixOS module (nix/module.nix).

The rendered file is the Debian-side twin of what `services.workorder.nginx.enable` produces:
- http level (NixOS `recommendedOptimisation`, `recommendedGzipSettings`, `recommendedProxySettings`,
  `commonHttpConfig`): sendfile/tcp_nopush/tcp_nodelay, gzip, proxy timeouts, HTTP/1.1 upstreams
  with `Connection ""`, the `$connection_upgrade` map, `limit_req_zone` + `limit_req_status 429`;
- `upstream workorder-gunicorn` (gunicorn's unix socket, `keepalive` pool whose
  `keepalive_timeout` is shorter than gunicorn's keep-alive, so gunicorn never closes an idle
  upstream connection first) and `upstream workorder-daphne` (daphne's unix socket);
- the virtual host: `/api/` and `/admin/` to gunicorn with `limit_req`, `/ws/` to daphne with
  Upgrade and long read/send timeouts, `/static/` from STATIC_ROOT, `/media/` from MEDIA_ROOT,
  `/health/` and `/ready/` to gunicorn, `/metrics` closed (403), security headers;
- a loopback-only `stub_status` server for the nginx exporter (NixOS `services.nginx.statusPage`).

Differences from NixOS that come from running unprivileged-in-a-temp-dir, not from the layout:
listen ports are free loopback ports, paths live in the temp dir, and as root the workers run as
root (NixOS: user nginx with the workorder group as a supplementary group).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .process import ManagedProcess
from .services import find_binary, free_port, wait_for_port

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# NixOS recommendedProxySettings: included in every location with proxy_pass.
PROXY_HEADERS = """\
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Server $host;"""


def nginx_binary() -> str:
    return find_binary("nginx", ("/usr/sbin/nginx", "/usr/bin/nginx"))


def _mime_types() -> str | None:
    for candidate in ("/etc/nginx/mime.types", "/usr/share/nginx/mime.types"):
        if os.path.exists(candidate):
            return candidate
    return None


@dataclass
class NginxConfig:
    """Everything the rendered config depends on. Defaults mirror the module's option defaults."""

    gunicorn_socket: Path
    daphne_socket: Path
    static_root: Path
    media_root: Path
    server_name: str = "localhost"
    # services.workorder.nginx.rateLimit.{rate,burst}; module default 10 r/s burst 20 per client.
    rate_limit: str = "10r/s"
    rate_burst: int = 20
    # nginx's idle time for pooled upstream connections: must stay below GUNICORN_KEEPALIVE.
    upstream_keepalive: int = 32
    upstream_keepalive_timeout: int = 60
    ws_timeout: str = "3600s"
    client_max_body_size: str = "10m"
    worker_processes: str = "auto"
    worker_connections: int = 4096
    access_log: bool = True
    # Extra `location` blocks for the vhost (the capacity benchmark adds /floor/ here; production never does).
    extra_locations: str = ""
    extra_upstreams: str = ""
    security_headers: dict[str, str] = field(default_factory=lambda: dict(SECURITY_HEADERS))


class NginxServer:
    def __init__(self, base_dir: Path, config: NginxConfig, port: int | None = None, status_port: int | None = None):
        self.base = Path(base_dir)
        self.config = config
        self.port = port or free_port()
        self.status_port = status_port or free_port()
        self.conf_path = self.base / "nginx.conf"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/nginx_status"

    # -- config -------------------------------------------------------------------------------
    def render(self) -> str:
        c = self.config
        base = self.base
        mime = _mime_types()
        user = "user root root;\n" if os.geteuid() == 0 else ""
        headers = "\n".join(f'    add_header {name} "{value}" always;' for name, value in c.security_headers.items())
        limit = f"      limit_req zone=workorder burst={c.rate_burst} nodelay;"
        access_log = (f"access_log {base}/access.log combined buffer=64k flush=1s;" if c.access_log
                      else "access_log off;")
        return f"""\
# Rendered by tests/harness/nginx.py: the stack test's twin of services.workorder.nginx (nix/module.nix).
{user}daemon off;
master_process on;
worker_processes {c.worker_processes};
pid {base}/nginx.pid;
error_log {base}/error.log warn;

events {{
  worker_connections {c.worker_connections};
}}

http {{
  {"include " + mime + ";" if mime else ""}
  default_type application/octet-stream;
  client_body_temp_path {base}/tmp/client_body;
  proxy_temp_path {base}/tmp/proxy;
  fastcgi_temp_path {base}/tmp/fastcgi;
  uwsgi_temp_path {base}/tmp/uwsgi;
  scgi_temp_path {base}/tmp/scgi;
  {access_log}
  server_tokens off;

  # recommendedOptimisation
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  types_hash_max_size 4096;

  # recommendedGzipSettings
  gzip on;
  gzip_static on;
  gzip_vary on;
  gzip_comp_level 5;
  gzip_min_length 256;
  gzip_proxied expired no-cache no-store private auth;
  gzip_types application/atom+xml application/geo+json application/javascript application/json application/ld+json application/manifest+json application/rdf+xml application/vnd.ms-fontobject application/wasm application/x-rss+xml application/x-web-app-manifest+json application/xhtml+xml application/xliff+xml application/xml font/collection font/otf font/ttf image/bmp image/svg+xml image/vnd.microsoft.icon text/cache-manifest text/calendar text/css text/csv text/javascript text/markdown text/plain text/vcard text/vnd.rim.location.xloc text/vtt text/x-component text/xml;

  # recommendedProxySettings (http level)
  proxy_redirect off;
  proxy_connect_timeout 60s;
  proxy_send_timeout 60s;
  proxy_read_timeout 60s;
  proxy_http_version 1.1;
  proxy_set_header "Connection" "";
  client_max_body_size {c.client_max_body_size};

  map $http_upgrade $connection_upgrade {{
    default upgrade;
    '' close;
  }}

  # commonHttpConfig of services.workorder: one rate-limit zone keyed by client address.
  limit_req_zone $binary_remote_addr zone=workorder:10m rate={c.rate_limit};

  upstream workorder-gunicorn {{
    server unix:{c.gunicorn_socket};
    keepalive {c.upstream_keepalive};
    keepalive_timeout {c.upstream_keepalive_timeout}s;
  }}

  upstream workorder-daphne {{
    server unix:{c.daphne_socket};
  }}
{c.extra_upstreams}
  server {{
    listen 127.0.0.1:{self.port};
    server_name {c.server_name};

    # virtualHosts.<hostName>.extraConfig
    limit_req_status 429;
{headers}

    location /api/ {{
      proxy_pass http://workorder-gunicorn;
{PROXY_HEADERS}
{limit}
    }}

    location /admin/ {{
      proxy_pass http://workorder-gunicorn;
{PROXY_HEADERS}
{limit}
    }}

    location = /health/ {{
      proxy_pass http://workorder-gunicorn;
{PROXY_HEADERS}
    }}

    location = /ready/ {{
      proxy_pass http://workorder-gunicorn;
{PROXY_HEADERS}
    }}

    location /ws/ {{
      proxy_pass http://workorder-daphne;
{PROXY_HEADERS}
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      # daphne logs every connection without the query string; nginx's $request would keep a ?token=.
      access_log off;
      proxy_read_timeout {c.ws_timeout};
      proxy_send_timeout {c.ws_timeout};
      proxy_buffering off;
{limit}
    }}

    location /static/ {{
      alias {c.static_root}/;
      expires 30d;
      access_log off;
    }}

    location /media/ {{
      alias {c.media_root}/;
    }}

    # Metrics are scraped by Prometheus on gunicorn's loopback TCP listener, never through nginx.
    location /metrics {{
      deny all;
    }}
{c.extra_locations}
  }}

  # services.nginx.statusPage: stub_status on loopback for the nginx exporter.
  server {{
    listen 127.0.0.1:{self.status_port};
    server_name localhost;
    location /nginx_status {{
      stub_status;
      access_log off;
      allow 127.0.0.1;
      allow ::1;
      deny all;
    }}
  }}
}}
"""

    def write(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.base / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render())
        return self.conf_path

    def check(self) -> str:
        """`nginx -t` on the rendered file; raises with nginx's message when it is invalid."""
        self.write()
        result = subprocess.run([nginx_binary(), "-t", "-p", str(self.base), "-c", str(self.conf_path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{result.stderr}")
        return result.stderr

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "NginxServer":
        self.check()
        self.process = ManagedProcess(
            "nginx", [nginx_binary(), "-p", str(self.base), "-c", str(self.conf_path)],
            log_path=self.base / "nginx.stderr.log", stop_signal=15,
        ).start()
        self.process.wait_until(lambda: _port_open(self.port) and _port_open(self.status_port), timeout,
                                "listening")
        return self

    def reload(self) -> None:
        self.check()
        if self.process:
            import signal

            os.kill(self.process.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def status(self) -> str:
        with urllib.request.urlopen(self.status_url, timeout=5) as response:
            return response.read().decode()


def _port_open(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.2)
        return True
    except TimeoutError:
        return False
