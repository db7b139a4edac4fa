"""nginx in front of gunicorn and daphne, rendered from nix/deployment.nix like the NixOS module.

The layout (rate-limit zone, upstreams with their keep-alive pool, the virtual host's headers and
every location) comes from evaluating nix/deployment.nix (tests/harness/deployment.py), the file
the module hands to `services.nginx`. This file only renders those values the way NixOS's nginx
module does: its `recommendedOptimisation`, `recommendedGzipSettings` and `recommendedProxySettings`
http-level lines, and per location `proxy_pass`, the `proxyWebsockets` lines, `alias`, `return`,
`extraConfig`, then the recommended proxy headers; plus `services.nginx.statusPage` (stub_status on
loopback for the nginx exporter).

Differences from NixOS that come from running unprivileged-in-a-temp-dir, not from the layout:
listen ports are free loopback ports, paths live in the temp dir, and as root the workers run as
root (NixOS: user nginx with the workorder group as a supplementary group).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import deployment
from .process import ManagedProcess
from .services import find_binary, free_port, wait_for_port

# NixOS nginx module, recommendedProxySettings: included in every location with proxy_pass
# (nixos/modules/services/web-servers/nginx/default.nix, recommendedProxyConfig).
PROXY_HEADERS = (
    "proxy_set_header Host $host;",
    "proxy_set_header X-Real-IP $remote_addr;",
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
    "proxy_set_header X-Forwarded-Host $host;",
    "proxy_set_header X-Forwarded-Server $hostname;",
)
# NixOS nginx module, proxyWebsockets = true.
WEBSOCKET_LINES = (
    "proxy_http_version 1.1;",
    "proxy_set_header Upgrade $http_upgrade;",
    "proxy_set_header Connection $connection_upgrade;",
)


def nginx_binary() -> str:
    return find_binary("nginx", ("/usr/sbin/nginx", "/usr/bin/nginx"))


def _mime_types() -> str | None:
    for candidate in ("/etc/nginx/mime.types", "/usr/share/nginx/mime.types"):
        if os.path.exists(candidate):
            return candidate
    return None


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line.strip() else "" for line in text.splitlines())


@dataclass
class NginxConfig:
    """This stack's arguments to nix/deployment.nix's `nginx`, plus the test-only knobs."""

    gunicorn_socket: Path
    daphne_socket: Path
    static_root: Path
    media_root: Path
    server_name: str = "localhost"
    # services.workorder.nginx.rateLimit.{rate,burst}; None: the module's default.
    rate_limit: str | None = None
    rate_burst: int | None = None
    # services.workorder.nginx.requestsInFlight (0: no limit); None: the module's default.
    requests_in_flight: int | None = None
    # The shed log (one line per request refused for the in-flight limit); None: shed.log in the
    # server's directory.
    shed_log: Path | None = None
    client_max_body_size: str = "10m"
    worker_processes: str = "auto"
    worker_connections: int = 4096
    access_log: bool = True
    # Benchmarks: one line per request with its end ($msec) and nginx's time for it, in timing.log.
    timing_log: bool = False
    # Extra `location` blocks for the vhost (the capacity benchmark adds /floor/ here; production never does).
    extra_locations: str = ""
    extra_upstreams: str = ""
    # Benchmarks only: a change to the evaluated layout (e.g. the "before" of a fix).
    layout_transform: Callable[[dict], dict] | None = None
    # Several app nodes (tests/harness/multinode.py): "host:port" of each node's gunicorn and daphne,
    # instead of the sockets (which are then None).
    gunicorn_servers: list[str] | None = None
    daphne_servers: list[str] | None = None

    def layout(self) -> dict:
        if self.shed_log is None:
            raise ValueError("NginxConfig.shed_log is unset (NginxServer sets it to shed.log in its directory)")
        args = {"staticRoot": str(self.static_root), "mediaRoot": str(self.media_root)}
        for key, value in (("gunicornSocket", self.gunicorn_socket), ("daphneSocket", self.daphne_socket)):
            if value is not None:
                args[key] = str(value)
        for key, value in (("gunicornServers", self.gunicorn_servers), ("daphneServers", self.daphne_servers)):
            if value is not None:
                args[key] = list(value)
        if self.rate_limit is not None:
            args["rateLimit"] = self.rate_limit
        if self.rate_burst is not None:
            args["rateBurst"] = self.rate_burst
        if self.requests_in_flight is not None:
            args["requestsInFlight"] = self.requests_in_flight
        args["shedLog"] = str(self.shed_log)
        layout = deployment.evaluate(nginx=args)["nginx"]
        return self.layout_transform(layout) if self.layout_transform else layout


def render_upstreams(upstreams: dict) -> str:
    blocks = []
    for name, upstream in sorted(upstreams.items()):
        servers = []
        for address, parameters in sorted(upstream["servers"].items()):
            params = " ".join(key if value is True else f"{key}={value}"
                              for key, value in sorted(parameters.items()) if value is not False)
            servers.append(f"server {address}{' ' + params if params else ''};")
        body = "\n".join(servers + [upstream.get("extraConfig", "")])
        blocks.append(f"upstream {name} {{\n{_indent(body, 2)}\n}}")
    return "\n\n".join(blocks)


def render_location(path: str, location: dict) -> str:
    lines = []
    if location.get("proxyPass"):
        lines.append(f"proxy_pass {location['proxyPass']};")
    if location.get("proxyWebsockets"):
        lines.extend(WEBSOCKET_LINES)
    if location.get("alias"):
        lines.append(f"alias {location['alias']};")
    if location.get("return") is not None:
        lines.append(f"return {location['return']};")
    if location.get("extraConfig"):
        lines.extend(location["extraConfig"].splitlines())
    if location.get("proxyPass") and location.get("recommendedProxySettings", True):
        lines.extend(PROXY_HEADERS)
    return f"location {path} {{\n{_indent(chr(10).join(lines), 2)}\n}}"


def render_locations(locations: dict) -> str:
    # NixOS orders locations by `priority` (default 1000), then by name.
    ordered = sorted(locations.items(), key=lambda item: (item[1].get("priority", 1000), item[0]))
    return "\n\n".join(render_location(path, location) for path, location in ordered)


class NginxServer:
    def __init__(self, base_dir: Path, config: NginxConfig, port: int | None = None, status_port: int | None = None):
        self.base = Path(base_dir)
        self.config = config
        if config.shed_log is None:
            config.shed_log = self.base / "shed.log"
        self.port = port or free_port()
        self.status_port = status_port or free_port()
        self.conf_path = self.base / "nginx.conf"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def timing_log(self) -> Path:
        return self.base / "timing.log"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/nginx_status"

    # -- config -------------------------------------------------------------------------------
    def render(self) -> str:
        c = self.config
        layout = c.layout()
        base = self.base
        mime = _mime_types()
        user = "user root root;\n" if os.geteuid() == 0 else ""
        logs = [f"access_log {base}/access.log combined buffer=64k flush=1s;"] if c.access_log else []
        if c.timing_log:
            logs = ["log_format workorder_timing '$msec $request_time $status $request_method $uri';",
                    *logs, f"access_log {self.timing_log} workorder_timing buffer=256k flush=1s;"]
        access_log = "\n  ".join(logs) or "access_log off;"
        return f"""\
# Rendered by tests/harness/nginx.py from nix/deployment.nix, as services.workorder.nginx does.
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
  gzip_types application/javascript application/json application/xml image/svg+xml text/css text/javascript text/plain text/xml;

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

  # services.workorder: commonHttpConfig
{_indent(layout["commonHttpConfig"], 2)}

{_indent(render_upstreams(layout["upstreams"]), 2)}
{c.extra_upstreams}
  server {{
    listen 127.0.0.1:{self.port};
    server_name {c.server_name};

{_indent(render_locations(layout["locations"]), 4)}
{c.extra_locations}

    # virtualHosts.<hostName>.extraConfig
{_indent(layout["virtualHostExtraConfig"], 4)}
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
    def start(self, timeout: float = 20.0) -> NginxServer:
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
