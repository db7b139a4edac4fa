"""nixpkgs' two ways of starting Python console scripts, emulated on Debian with a venv's packages.

The Debian CI runs everything from a venv, where any `python` child sees every package. The Nix
flake starts the same programs differently, and this module reproduces both ways in a temporary
directory so a test fails where the Nix build would:

1. wrapPythonPrograms (buildPythonApplication's console scripts: workorder-manage, workorder-daphne,
   workorder-backup, workorder-loadtest). `bin/NAME` is a shell wrapper that prefixes PATH, sets
   PYTHONNOUSERSITE=true and execs `bin/.NAME-wrapped`: the console script with a bare interpreter
   in its shebang and one line added before its first statement, which sets sys.argv[0] and
   addsitedir's the site-packages of every dependency (each package in its own store path). No
   venv, no PYTHONPATH: a child started as `sys.executable -m something` sees none of them.

2. python.buildEnv / withPackages (the NixOS module's gunicorn). `env/bin/gunicorn` sets
   NIX_PYTHONPATH (the env's site-packages), NIX_PYTHONEXECUTABLE (the env's python),
   NIX_PYTHONPREFIX and PYTHONNOUSERSITE and execs gunicorn's own wrapper (case 1, with gunicorn's
   dependencies only). nixpkgs' interpreter has a sitecustomize.py that pops NIX_PYTHONPATH and
   addsitedir's each entry and, outside a venv, makes NIX_PYTHONEXECUTABLE sys.executable; Debian's
   interpreter has no such hook, so every wrapped script here starts with the same steps.

The pieces, all under one root directory:

    python/        a bare copy of the venv's base interpreter: the same binary and standard library,
                   an empty site-packages (nixpkgs' python has nothing in its own either). Debian's
                   or pyenv's base interpreter can carry packages (flask, requests, ...) that would
                   shadow the venv's versions and hide a missing dependency.
    store/NAME-VERSION/lib/pythonX.Y/site-packages/
                   one directory per installed distribution of the venv (symlinks to its files), the
                   stand-in for its Nix store path; the project's own packages link to their sources.
    store/workorder-VERSION/bin/{workorder-manage,.workorder-manage-wrapped,...}
    store/gunicorn-VERSION/bin/{gunicorn,.gunicorn-wrapped}
    env/bin/gunicorn
                   the buildEnv wrapper, whose env is the venv itself (its python sees everything,
                   like the env's python does).

Usage (the venv is a parameter, so a second venv with nixpkgs' package versions can be used too):

    nix = NixWrappers(tmp_dir, venv="/work/main/.venv", sources=repo_sources())
    nix.require_bare_interpreter()           # fails loudly if the emulation would not be isolated
    manage = nix.console_script("workorder-manage")
    gunicorn = nix.env_program("gunicorn")
    subprocess.run([manage, "check"], env=nix.environment({...}), cwd=tmp_dir)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECTS = (REPO_ROOT / "backend", REPO_ROOT / "loadtest")

# What must never be importable by the bare interpreter: the project and its main dependencies.
ISOLATED_MODULES = ("django", "locust", "workorder", "workorder_loadtest")

# Linux refuses longer `#!` lines (BINPRM_BUF_SIZE is 128 bytes before 5.1, 256 after).
SHEBANG_LIMIT = 127


class EmulationError(RuntimeError):
    """The emulation cannot be built, or would not isolate what Nix isolates."""


def repo_sources(repo: Path = REPO_ROOT) -> dict[str, Path]:
    """The project's own top-level packages in this checkout (what its store paths would hold)."""
    return {"workorder": repo / "backend" / "workorder", "workorder_loadtest": repo / "loadtest" / "workorder_loadtest"}


def project_scripts(projects=PROJECTS) -> dict[str, tuple[str, str]]:
    """{console script: (distribution, "module:function")} from [project.scripts] of each pyproject."""
    scripts: dict[str, tuple[str, str]] = {}
    for project in projects:
        data = tomllib.loads((Path(project) / "pyproject.toml").read_text())["project"]
        for name, target in data.get("scripts", {}).items():
            scripts[name] = (data["name"], target)
    return scripts


def clean_environ(environ=None, *, drop_path: tuple[str, ...] = ()) -> dict[str, str]:
    """`environ` without anything that changes how Python finds modules (PYTHON*, VIRTUAL_ENV,
    NIX_PYTHON*), with the directories in `drop_path` removed from PATH."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items()
           if not k.startswith(("PYTHON", "NIX_PYTHON")) and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    dropped = {os.path.normpath(p) for p in drop_path}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and os.path.normpath(p) not in dropped]
    env["PATH"] = os.pathsep.join(path)
    return env


# --- the venv ------------------------------------------------------------------------------------

# Run by the venv's python: its facts and the distributions it has installed, as JSON.
_VENV_QUERY = r"""
import json, sys, sysconfig
from importlib import metadata, util
roots = json.loads(sys.argv[1])
if roots:
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name

def describe(dist, extras):
    files = [str(f) for f in (dist.files or [])]
    site = str(dist.locate_file(""))
    info = [f.split("/")[0] for f in files if f.split("/")[0].endswith((".dist-info", ".egg-info"))]
    info_dir = info[0] if info else getattr(dist, "_path", None) and dist._path.name
    try:
        editable = json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable", False)
    except ValueError:
        editable = False
    tops = set()
    if editable:
        for name in (dist.read_text("top_level.txt") or "").split():
            spec = util.find_spec(name)
            if spec is not None:
                locations = list(spec.submodule_search_locations or [])
                tops.add(locations[0] if locations else spec.origin)
    else:
        for f in files:
            top = f.split("/")[0]
            if top not in ("..", "__pycache__", info_dir) and not top.startswith("__editable__"):
                tops.add(site + "/" + top)
    requires = []
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            requires.append([canonicalize_name(req.name), sorted(req.extras)])
    return {
        "name": dist.metadata["Name"], "version": dist.version, "editable": editable,
        "info_dir": site + "/" + info_dir if info_dir else None, "entries": sorted(tops),
        "requires": requires,
        "console_scripts": {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"},
    }

dists, missing, todo, extras_seen = {}, [], [(canonicalize_name(n), []) for n in roots], {}
while todo:
    key, extras = todo.pop()
    wanted = set(extras) | set(extras_seen.get(key, ()))
    if key in dists and wanted <= set(extras_seen.get(key, ())):
        continue
    extras_seen[key] = sorted(wanted)
    try:
        dist = metadata.distribution(key)
    except metadata.PackageNotFoundError:
        missing.append(key)
        continue
    dists[key] = describe(dist, wanted)
    todo.extend(dists[key]["requires"])
print(json.dumps({
    "prefix": sys.prefix, "base_executable": getattr(sys, "_base_executable", sys.executable),
    "purelib": sysconfig.get_path("purelib"), "version": "%d.%d" % sys.version_info[:2],
    "dists": dists, "missing": sorted(set(missing)),
}))
"""


@dataclass
class Distribution:
    key: str
    name: str
    version: str
    editable: bool
    info_dir: str | None
    entries: list[str]
    requires: list[str]
    console_scripts: dict[str, str]


@dataclass
class Venv:
    """A virtualenv: its python, its base interpreter and its installed distributions."""

    path: Path
    _query_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.path = Path(self.path)
        if not (self.path / "pyvenv.cfg").is_file():
            raise EmulationError(f"{self.path} is not a venv (no pyvenv.cfg)")

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    def config(self) -> dict[str, str]:
        values = {}
        for line in (self.path / "pyvenv.cfg").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        return values

    def query(self, roots: tuple[str, ...] = ()) -> dict:
        """The venv's prefix, purelib, version and the dependency closure of `roots` (by name)."""
        key = tuple(sorted(roots))
        if key not in self._query_cache:
            result = subprocess.run([str(self.python), "-I", "-c", _VENV_QUERY, json.dumps(list(key))],
                                    check=False, capture_output=True, text=True, timeout=120, cwd="/",
                                    env=clean_environ())
            if result.returncode != 0:
                raise EmulationError(f"querying {self.python} failed:\n{result.stderr}")
            self._query_cache[key] = json.loads(result.stdout)
        return self._query_cache[key]

    @property
    def version(self) -> str:
        return self.query()["version"]

    @property
    def site_packages(self) -> Path:
        return Path(self.query()["purelib"])

    def base_interpreter(self) -> Path:
        """The interpreter the venv was made from: pyvenv.cfg `executable`, else `home`, else the
        venv python's sys._base_executable; symlinks resolved."""
        cfg = self.config()
        candidates = []
        if cfg.get("executable"):
            candidates.append(Path(cfg["executable"]))
        if cfg.get("home"):
            candidates.append(Path(cfg["home"]) / f"python{self.version}")
        candidates.append(Path(self.query()["base_executable"]))
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate.resolve()
        raise EmulationError(f"no base interpreter found for {self.path} (tried {', '.join(map(str, candidates))})")

    def closure(self, *roots: str) -> list[Distribution]:
        """Every distribution `roots` need at run time (Requires-Dist, markers and extras evaluated)."""
        data = self.query(tuple(roots))
        if data["missing"]:
            raise EmulationError(f"{self.path} lacks distributions that {', '.join(roots)} require: "
                                 f"{', '.join(data['missing'])}")
        return [Distribution(key=key, **{**d, "requires": [r[0] for r in d["requires"]]})
                for key, d in sorted(data["dists"].items())]


# --- the wrappers --------------------------------------------------------------------------------

# What nixpkgs' interpreter does at startup (its sitecustomize.py), written at the top of every
# wrapped script because the bare copy of Debian's interpreter has no such hook. A no-op unless a
# buildEnv wrapper set the variables; they are removed from the environment either way.
_SITECUSTOMIZE = '''\
def _nix_sitecustomize():
    import os, site, sys
    nix_path = os.environ.pop("NIX_PYTHONPATH", None)
    if nix_path:
        known = site._init_pathinfo()
        for directory in nix_path.split(":"):
            site.addsitedir(directory, known)
    if sys.prefix == sys.base_prefix:  # not in a venv
        executable = os.environ.pop("NIX_PYTHONEXECUTABLE", None)
        prefix = os.environ.pop("NIX_PYTHONPREFIX", None)
        if executable is not None and "PYTHONEXECUTABLE" not in os.environ:
            sys.executable = sys._base_executable = executable
        if prefix is not None:
            sys.prefix = sys.exec_prefix = prefix
            site.PREFIXES.insert(0, prefix)
_nix_sitecustomize()
del _nix_sitecustomize
'''


def _preamble(name: str, site_dirs: list[Path]) -> str:
    """The one line wrapPythonPrograms puts before a script's first statement (same effect)."""
    paths = ", ".join(repr(str(p)) for p in site_dirs)
    return (f"import site, sys; sys.argv[0] = {name!r}; _known = site._init_pathinfo(); "
            f"[site.addsitedir(_p, _known) for _p in ({paths},)]; del _known")


def console_script_body(target: str) -> str:
    """What an installer writes for the entry point `module:attr[.attr]` (without the shebang)."""
    module, _, attrs = target.partition(":")
    attrs = attrs.strip()
    if not re.fullmatch(r"[\w.]+", module.strip()) or not re.fullmatch(r"[\w.]+", attrs):
        raise EmulationError(f"not a console script entry point: {target!r}")
    head = attrs.split(".")[0]
    return ("import re\n"
            "import sys\n"
            f"from {module.strip()} import {head}\n"
            "if __name__ == '__main__':\n"
            "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({attrs}())\n")


def _shell_wrapper(target: Path, *, exports: dict[str, str], prefix_path: list[Path] = (),
                   inherit_argv0: bool = True) -> str:
    lines = ["#!/bin/bash -e"]
    if prefix_path:
        joined = shlex.quote(":".join(str(p) for p in prefix_path))
        lines.append(f"PATH={joined}${{PATH:+:$PATH}}")
        lines.append("export PATH")
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    argv0 = '-a "$0" ' if inherit_argv0 else ""
    lines.append(f'exec {argv0}{shlex.quote(str(target))} "$@"')
    return "\n".join(lines) + "\n"


def _write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


class NixWrappers:
    """wrapPythonPrograms and python.buildEnv wrappers over one venv's packages, under `root`.

    `sources` maps a top-level package name to a directory to use instead of the venv's copy (the
    project's packages are editable installs in the venv; this puts a checkout's, or a modified
    copy's, files into their store paths). `interpreter` replaces the bare copy of the venv's base
    interpreter (require_bare_interpreter() then checks it).
    """

    def __init__(self, root: str | Path, venv: str | Path | Venv = sys.prefix, *,
                 sources: dict[str, str | Path] | None = None, interpreter: str | Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.venv = venv if isinstance(venv, Venv) else Venv(Path(venv))
        self.sources = {name: Path(path).resolve() for name, path in (sources or {}).items()}
        self._python = Path(interpreter) if interpreter else None
        self._stores: dict[str, Path] = {}

    # -- the bare interpreter ------------------------------------------------------------------
    @property
    def python(self) -> Path:
        if self._python is None:
            self._python = self._bare_copy(self.root / "python")
        return self._python

    def _bare_copy(self, prefix: Path) -> Path:
        base = self.venv.base_interpreter()
        version = self.venv.version
        code = ("import json, sys, sysconfig; print(json.dumps([sys.prefix, sys.exec_prefix, "
                "sysconfig.get_path('stdlib'), sysconfig.get_path('platstdlib'), sys.platlibdir]))")
        probe = subprocess.run([str(base), "-I", "-S", "-c", code], check=False, capture_output=True, text=True,
                               timeout=60, env=clean_environ(), cwd="/")
        if probe.returncode != 0:
            raise EmulationError(f"{base} does not run: {probe.stderr}")
        base_prefix, exec_prefix, stdlib, platstdlib, platlibdir = json.loads(probe.stdout)
        if base_prefix != exec_prefix or Path(platstdlib) != Path(stdlib):
            raise EmulationError(f"{base}: prefix {base_prefix} and exec_prefix {exec_prefix} differ; "
                                 "a bare copy of this layout is not supported")
        binary = prefix / "bin" / f"python{version}"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base, binary)  # a copy, not a symlink: Python finds its prefix from here
            for alias in ("python3", "python"):
                (prefix / "bin" / alias).symlink_to(binary.name)
            lib = prefix / "lib"
            std = lib / f"python{version}"
            std.mkdir(parents=True)
            (std / "site-packages").mkdir()
            for entry in Path(stdlib).iterdir():
                if entry.name not in ("site-packages", "dist-packages"):
                    (std / entry.name).symlink_to(entry)
            # libpythonX.Y.so for a binary whose RUNPATH is relative to itself
            for entry in (Path(base_prefix) / platlibdir).glob("libpython*"):
                (lib / entry.name).symlink_to(entry)
        check = subprocess.run([str(binary), "-c", "import sys; print(sys.prefix)"], check=False,
                               capture_output=True, text=True, timeout=60, env=clean_environ(), cwd="/")
        if check.returncode != 0 or Path(check.stdout.strip()) != prefix:
            raise EmulationError(f"the bare copy {binary} of {base} does not start with prefix {prefix}: "
                                 f"{check.stdout}{check.stderr}")
        return binary

    def bare_interpreter_leaks(self, modules: tuple[str, ...] = ISOLATED_MODULES) -> dict[str, str]:
        """{what: where} the bare interpreter (-s, PYTHONNOUSERSITE) can import, plus anything in
        its own site-packages. Empty when the emulation is isolated like Nix's interpreter."""
        code = (
            "import importlib.util, json, os, site, sys\n"
            "found = {}\n"
            f"for name in {list(modules)!r}:\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    if spec is not None:\n"
            "        found[name] = str(spec.origin or list(spec.submodule_search_locations or []))\n"
            "for directory in site.getsitepackages():\n"
            "    if os.path.isdir(directory):\n"
            "        extra = sorted(e for e in os.listdir(directory) if e != '__pycache__')\n"
            "        if extra:\n"
            "            found[directory] = ', '.join(extra[:20]) + (' ...' if len(extra) > 20 else '')\n"
            "print(json.dumps(found))\n"
        )
        env = dict(clean_environ(drop_path=(str(self.venv.bin_dir),)), PYTHONNOUSERSITE="true")
        result = subprocess.run([str(self.python), "-s", "-c", code], check=False, capture_output=True,
                                text=True, timeout=60, env=env, cwd=str(self.root))
        if result.returncode != 0:
            raise EmulationError(f"{self.python} failed to run:\n{result.stderr}")
        return json.loads(result.stdout)

    def require_bare_interpreter(self, modules: tuple[str, ...] = ISOLATED_MODULES) -> None:
        """Raise EmulationError unless the bare interpreter sees none of `modules` and has an empty
        site-packages: otherwise every wrapper test would pass for the wrong reason."""
        leaks = self.bare_interpreter_leaks(modules)
        if leaks:
            details = "\n".join(f"  {what}: {where}" for what, where in leaks.items())
            raise EmulationError(
                f"the bare interpreter {self.python} is not isolated like nixpkgs' python: with -s and "
                f"PYTHONNOUSERSITE=true it still finds\n{details}\nThe Nix wrapper emulation needs a "
                "Python whose own site-packages holds nothing (see tests/harness/nix_wrappers.py).")

    # -- store paths ---------------------------------------------------------------------------
    def store_path(self, dist: Distribution) -> Path:
        """store/NAME-VERSION: the distribution's files (or its `sources` override) linked into
        lib/pythonX.Y/site-packages."""
        if dist.key in self._stores:
            return self._stores[dist.key]
        store = self.root / "store" / f"{dist.key}-{dist.version}"
        site = store / "lib" / f"python{self.venv.version}" / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        entries = [Path(e) for e in dist.entries]
        if dist.info_dir:
            entries.append(Path(dist.info_dir))
        for entry in entries:
            target = self.sources.get(entry.name.removesuffix(".py"), entry)
            link = site / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target)
        self._stores[dist.key] = store
        return store

    def site_dir(self, store: Path) -> Path:
        return store / "lib" / f"python{self.venv.version}" / "site-packages"

    # -- wrapPythonPrograms --------------------------------------------------------------------
    def wrap(self, name: str, dist_name: str, body: str) -> Path:
        """store/DIST-VERSION/bin/NAME (shell) and .NAME-wrapped (`body` run by the bare interpreter
        with DIST's dependency closure added by the preamble). Returns the shell wrapper."""
        closure = self.venv.closure(dist_name)
        own = next((d for d in closure if d.key == _canonical(dist_name)), None)
        if own is None:
            raise EmulationError(f"{dist_name} is not installed in {self.venv.path}")
        stores = [self.store_path(own)] + [self.store_path(d) for d in closure if d is not own]
        shebang = f"#!{self.python}"
        if len(shebang) > SHEBANG_LIMIT:
            raise EmulationError(f"{shebang!r} is longer than the kernel accepts; use a shorter root")
        own_bin = stores[0] / "bin"
        wrapped = own_bin / f".{name}-wrapped"
        _write_executable(wrapped, "\n".join([
            shebang,
            "# -*- coding: utf-8 -*-",
            _SITECUSTOMIZE.rstrip("\n"),
            _preamble(name, [self.site_dir(s) for s in stores]),
            body.rstrip("\n"),
        ]) + "\n")
        path_prefix = [self.python.parent] + [s / "bin" for s in stores if (s / "bin").is_dir()]
        return _write_executable(own_bin / name, _shell_wrapper(
            wrapped, exports={"PYTHONNOUSERSITE": "true"}, prefix_path=path_prefix))

    def console_script(self, name: str, scripts: dict[str, tuple[str, str]] | None = None) -> Path:
        """The wrapPythonPrograms wrapper of a [project.scripts] console script of backend/ or
        loadtest/ (or of `scripts`: {name: (distribution, "module:function")})."""
        scripts = project_scripts() if scripts is None else scripts
        if name not in scripts:
            raise EmulationError(f"no console script {name!r} in {sorted(scripts)}")
        dist_name, target = scripts[name]
        return self.wrap(name, dist_name, console_script_body(target))

    def program(self, name: str, dist_name: str | None = None) -> Path:
        """The wrapPythonPrograms wrapper of the console script NAME that the installed distribution
        `dist_name` (default: NAME) declares, e.g. gunicorn's own `bin/gunicorn`."""
        dist_name = dist_name or name
        own = next((d for d in self.venv.closure(dist_name) if d.key == _canonical(dist_name)), None)
        if own is None or name not in own.console_scripts:
            raise EmulationError(f"{dist_name} in {self.venv.path} has no console script {name!r}")
        return self.wrap(name, dist_name, console_script_body(own.console_scripts[name]))

    # -- python.buildEnv -----------------------------------------------------------------------
    def env_program(self, name: str, dist_name: str | None = None) -> Path:
        """env/bin/NAME: the buildEnv wrapper around program(NAME, dist_name), whose own wrapper adds
        only that distribution's closure. The env's packages (the venv's site-packages) arrive
        through NIX_PYTHONPATH, and sys.executable becomes the env's python (the venv's) through
        NIX_PYTHONEXECUTABLE."""
        inner = self.program(name, dist_name)
        exports = {
            "NIX_PYTHONPREFIX": str(self.venv.path),
            "NIX_PYTHONEXECUTABLE": str(self.venv.bin_dir / f"python{self.venv.version}"),
            "NIX_PYTHONPATH": str(self.venv.site_packages),
            "PYTHONNOUSERSITE": "true",
        }
        return _write_executable(self.root / "env" / "bin" / name,
                                 _shell_wrapper(inner, exports=exports, inherit_argv0=False))

    # -- environment ---------------------------------------------------------------------------
    def environment(self, extra: dict[str, str] | None = None, environ=None) -> dict[str, str]:
        """An environment like a systemd unit's: no PYTHON*/VIRTUAL_ENV, the venv's bin dir off
        PATH, plus `extra`."""
        env = clean_environ(environ, drop_path=(str(self.venv.bin_dir),))
        env.update(extra or {})
        return env


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
