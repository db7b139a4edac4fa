# The workorder service (backend/) as one Python application.
#
# - One private Python package set in which Django is the 5.2 LTS series (netbox and paperless
#   pin their Django the same way); `passthru.python` hands that set to the NixOS module, so
#   gunicorn and the app always come from the same set.
# - Static files are collected at build time into $out/share/workorder/static (weblate's
#   approach); the module serves them from the store and sets STATIC_ROOT there.
# - Unit tests do not run here (most need PostgreSQL/Redis); the flake's checks run them.
{
  lib,
  python3,
  fetchPypi,
  postgresql,
  # Set by the flake: { vm-loadtest, vm-backup, ... } so `nix build .#workorder.tests.vm-backup` works.
  vmTests ? { },
}:
let
  # Django 5.2 LTS (django_5 is the 5.2 series on 25.11 and 26.05, asserted below), and every other
  # direct dependency at exactly the version CI tests (nix/python-versions.json); the load test's
  # too, since the flake's dev shell runs both projects on this set.
  python = python3.override {
    self = python;
    packageOverrides = lib.composeExtensions (final: prev: { django = prev.django_5; }) (
      import ./python-overrides.nix { inherit lib fetchPypi; } [
        "backend"
        "loadtest"
      ]
    );
  };

  pyproject = lib.importTOML ../backend/pyproject.toml;

  # Dependencies as nixpkgs attributes, from the version table (tests/nix/test_versions.py checks it
  # against pyproject.toml). Nix builds psycopg2 against libpq where pip installs psycopg2-binary;
  # schemathesis has no nixpkgs attribute (PyPI only), so the schema fuzzing skips in the Nix checks.
  table = lib.importJSON ./python-versions.json;
  dependenciesFor =
    role: ps:
    map (entry: ps.${entry.attr}) (
      builtins.filter (
        entry: entry.role == role && builtins.elem "backend" entry.sets && entry.attr != null
      ) table.python
    );
  runtimeDependencies = dependenciesFor "runtime";
  testDependencies = dependenciesFor "test";
in
assert lib.assertMsg (lib.versions.majorMinor python.pkgs.django.version == "5.2")
  "workorder needs Django 5.2 (LTS); this nixpkgs has ${python.pkgs.django.version} as django_5";
python.pkgs.buildPythonApplication {
  pname = "workorder";
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../backend;
    fileset = lib.fileset.unions [
      ../backend/pyproject.toml
      ../backend/README.md
      ../backend/workorder
    ];
  };

  build-system = [ python.pkgs.setuptools ];

  dependencies = runtimeDependencies python.pkgs;

  # The versions come from the package set above (overridden to constraints.txt's, Django 5.2
  # asserted); the lower bounds in pyproject.toml hold for them.
  pythonRelaxDeps = true;
  pythonRemoveDeps = [ "psycopg2-binary" ];

  # workorder-backup runs pg_dump/pg_restore/psql; the NixOS module puts the server's own
  # PostgreSQL first on PATH, this is the fallback for `nix run`/`nix shell` use.
  makeWrapperArgs = [
    "--suffix"
    "PATH"
    ":"
    (lib.makeBinPath [ postgresql ])
  ];

  postInstall = ''
    # Collect static files into the package (served by nginx from the store).
    mkdir -p $out/share/workorder
    export PYTHONPATH="$out/${python.sitePackages}:$PYTHONPATH"
    DJANGO_SETTINGS_MODULE=workorder.settings \
    DJANGO_SECRET_KEY=collectstatic-at-build-time-only \
    WORKORDER_STATE_DIR="$TMPDIR/workorder-state" \
    STATIC_ROOT="$out/share/workorder/static" \
      ${python.pythonOnBuildForHost.interpreter} -m django collectstatic --no-input --verbosity 1
  '';

  # The test suite needs a PostgreSQL server; `checks.<system>.backend-tests` runs it.
  doCheck = false;
  pythonImportsCheck = [ "workorder" ];

  passthru = {
    inherit python runtimeDependencies testDependencies;
    staticRoot = "share/workorder/static";
    tests = vmTests;
  };

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "workorder-manage";
    platforms = lib.platforms.linux;
  };
}
