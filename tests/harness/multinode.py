"""Several application nodes behind one balancer, on one PostgreSQL and one Redis: `MultiNodeStack`.

The Debian twin of a scaled-out deployment (docs/runtime.md, "Several nodes"), on one machine: the
database half of a `Stack` (tests/harness/stack.py: PostgreSQL cloned from the run's seeded template,
Redis with its password), then N nodes, each with its own run and state directories, its own
prometheus multiprocess directory and its own TCP ports on 127.0.0.1 for gunicorn and daphne (each
node's GUNICORN_BIND / DAPHNE_BIND for the balancer), and one nginx whose upstreams list every node's
gunicorn and daphne with passive health checks (nix/deployment.nix: gunicornServers/daphneServers,
max_fails/fail_timeout, `proxy_next_upstream error timeout` without non_idempotent).

Every node gets the environment nix/deployment.nix gives a node of a cluster: WORKORDER_NODES=N, the
same secret key file (outside every node's state directory), WORKORDER_TRUSTED_PROXY_NETWORKS naming
the balancer only (127.0.0.1/32: a peer at 127.0.0.2 is a client talking to a node directly).

Migrations: before the nodes start, the newest migration of `rollback` is unapplied, then every node
runs `workorder-manage migrate_locked` at the same moment (each node's workorder-migrate unit): one
applies it, the others wait and find nothing to do (`migrate_results`, one per node).

    with MultiNodeStack(StackOptions(seed_cache=cache, monitoring=False), nodes=2) as stack:
        stack.url                       # nginx
        stack.nodes[0].gunicorn.url     # node 1 directly
        stack.stop_node(stack.nodes[0]) # SIGTERM to its gunicorn and daphne, as `systemctl stop`
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from workorder.core.env import default_gunicorn_workers

from . import deployment
from .app import DaphneServer, GunicornServer
from .nginx import NginxConfig, NginxServer
from .services import free_port
from .stack import Stack, StackOptions, venv_binary

BALANCER_NETWORKS = "127.0.0.1/32"  # nginx connects to the nodes from 127.0.0.1


@dataclass
class Node:
    index: int  # 1-based, as in "node 1"
    base: Path
    env: dict[str, str]
    gunicorn_port: int
    daphne_port: int
    gunicorn: GunicornServer | None = None
    daphne: DaphneServer | None = None
    migrate: subprocess.CompletedProcess | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"node {self.index}"

    @property
    def gunicorn_address(self) -> str:
        return f"127.0.0.1:{self.gunicorn_port}"

    @property
    def daphne_address(self) -> str:
        return f"127.0.0.1:{self.daphne_port}"

    def app_env(self) -> dict[str, str]:
        """workorder-migrate and workorder-manage: the node's environment without the servers' part."""
        return {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


class MultiNodeStack(Stack):
    def __init__(self, options: StackOptions | None = None, nodes: int = 2, base_dir: str | Path | None = None,
                 log=print, name: str = "multinode",
                 rollback: tuple[str, str] | None = ("production", "0003_task_department_work_order_index")):
        super().__init__(options, base_dir, log, name)
        if nodes < 1:
            raise ValueError("at least one node")
        self.node_count = nodes
        self.rollback = rollback
        self.nodes: list[Node] = []
        # One key for every node, outside every node's state directory (settings.py refuses a key
        # generated per node once WORKORDER_NODES > 1).
        self.shared_secret_key_file = self.secrets_dir / "django_secret_key"

    # -- configuration ------------------------------------------------------------------------
    def node_env(self, index: int, base: Path, gunicorn_port: int, daphne_port: int) -> dict[str, str]:
        params = self.deployment_params()
        environment = {**params["environment"], "stateDir": str(base / "state"),
                       "gunicornBind": f"127.0.0.1:{gunicorn_port}", "daphneBind": f"127.0.0.1:{daphne_port}",
                       "secretKeyFile": str(self.shared_secret_key_file), "nodes": self.node_count,
                       "trustedProxyNetworks": BALANCER_NETWORKS}
        evaluated = deployment.evaluate(environment=environment,
                                        serverEnvironment={"multiprocDir": str(base / "run" / "prometheus-multiproc")})
        env = {**self.base_env(), "HOME": str(base / "state"),
               **deployment.without_nulls(evaluated["environment"]), **evaluated["serverEnvironment"],
               "CREDENTIALS_DIRECTORY": str(self.credentials_dir)}
        if self.options.gunicorn_workers:
            env["GUNICORN_WORKERS"] = str(self.options.gunicorn_workers)
        return {**env, **self.options.gunicorn_extra_env}

    # -- lifecycle ----------------------------------------------------------------------------
    def _start(self) -> None:
        o = self.options
        self.start_database()  # the clone, PostgreSQL, Redis, `migrate` (nothing to apply on a clone)
        if self.rollback:
            with self._step(f"unapply the migrations after {'.'.join(self.rollback)}"):
                self.manage("migrate", *self.rollback, "--noinput")
        self.shared_secret_key_file.write_text(secrets.token_urlsafe(50))
        os.chmod(self.shared_secret_key_file, 0o600)
        with self._step("collectstatic"):
            self.manage("collectstatic", "--noinput")
        for index in range(1, self.node_count + 1):
            base = self.base / f"node{index}"
            for sub in ("run", "state", "run/prometheus-multiproc"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            gunicorn_port, daphne_port = free_port(), free_port()
            self.nodes.append(Node(index, base, self.node_env(index, base, gunicorn_port, daphne_port),
                                   gunicorn_port, daphne_port))
        with self._step(f"migrate_locked on {self.node_count} nodes at once"):
            self.migrate_all_at_once()
        workers = o.gunicorn_workers or default_gunicorn_workers()
        for node in self.nodes:
            with self._step(f"{node.name}: gunicorn and daphne"):
                node.gunicorn = GunicornServer(node.env, node.base / "run", port=node.gunicorn_port, workers=workers)
                node.gunicorn.start(timeout=120)
                node.daphne = DaphneServer(node.env, node.base / "run", port=node.daphne_port)
                node.daphne.start(timeout=60)
        with self._step("nginx (balancer)"):
            self.nginx = NginxServer(self.base / "nginx", NginxConfig(
                gunicorn_socket=None, daphne_socket=None,
                gunicorn_servers=[n.gunicorn_address for n in self.nodes],
                daphne_servers=[n.daphne_address for n in self.nodes],
                static_root=self.static_root, media_root=self.media_root, server_name=o.server_name,
                rate_limit=o.rate_limit, rate_burst=o.rate_burst, requests_in_flight=o.requests_in_flight,
                access_log=o.nginx_access_log, extra_locations=o.nginx_extra_locations,
                extra_upstreams=o.nginx_extra_upstreams,
            ), port=self.nginx_port)
            self.nginx.start()

    def migrate_all_at_once(self, timeout: float = 600) -> None:
        """Every node's workorder-migrate (`migrate_locked`) started together; fails if one fails."""
        barrier = threading.Barrier(len(self.nodes))

        def run(node: Node) -> None:
            barrier.wait(30)
            node.migrate = subprocess.run([venv_binary("workorder-manage"), "migrate_locked", "--no-input"],
                                          env=node.app_env(), cwd=str(node.base / "state"), capture_output=True,
                                          text=True, timeout=timeout)

        threads = [threading.Thread(target=run, args=(node,), name=f"migrate-{node.index}") for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 30)
        for node in self.nodes:
            if node.migrate is None or node.migrate.returncode != 0:
                detail = node.migrate and (node.migrate.stdout[-2000:] + node.migrate.stderr[-2000:])
                raise RuntimeError(f"{node.name}: migrate_locked failed: {detail}")
            self.log(f"[{self.name}] {node.name} migrate_locked: "
                     + " | ".join(line.strip() for line in node.migrate.stdout.splitlines() if line.strip())[-400:])

    @property
    def migrate_results(self) -> list[subprocess.CompletedProcess]:
        return [node.migrate for node in self.nodes]

    def stop_node(self, node: Node) -> dict[str, int | None]:
        """`systemctl stop` of the node's gunicorn and daphne, both at once: SIGTERM, graceful
        (in-flight requests finish), SIGKILL after the stop timeout. Their exit statuses."""
        statuses: dict[str, int | None] = {}

        def stop(name: str, server) -> None:
            statuses[name] = server.stop() if server else None

        threads = [threading.Thread(target=stop, args=(name, server)) for name, server in
                   (("gunicorn", node.gunicorn), ("daphne", node.daphne))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return statuses

    def stop(self) -> None:
        """nginx, every node, then the database half (Stack.stop); never raises."""
        for name, action in [("nginx", lambda: self.nginx and self.nginx.stop())] + [
            (f"{node.name} {kind}", server.stop) for node in self.nodes
            for kind, server in (("daphne", node.daphne), ("gunicorn", node.gunicorn)) if server
        ]:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.log(f"[{self.name}] stopping {name} failed: {exc!r}")
        super().stop()

    def collect_logs(self, dest: Path) -> list[Path]:
        copied = super().collect_logs(dest)
        for node in self.nodes:
            for path in (node.base / "run").glob("*.log"):
                target = Path(dest) / f"node{node.index}-{path.name}"
                try:
                    shutil.copyfile(path, target)
                    copied.append(target)
                except OSError:
                    pass
        return copied
