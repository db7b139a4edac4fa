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
  postgresql,
  # Set by the flake: { vm-loadtest, vm-backup, ... } so `nix build .#workorder.tests.vm-backup` works.
  vmTests ? { },
}:
let
  python = python3.override {
    self = python;
    packageOverrides = final: prev: {
      # nixos-25.11: django_5 is the 5.2 series (nixpkgs PR #416022 "python3Packages.django_5: 5.1 -> 5.2").
      django = prev.django_5;
    };
  };

  pyproject = lib.importTOML ../backend/pyproject.toml;

  # The runtime dependencies, as nixpkgs attribute names (see nix/README.md for where each is defined).
  # backend/pyproject.toml names psycopg2-binary for pip; Nix builds psycopg2 against libpq instead.
  runtimeDependencies =
    ps: with ps; [
      django
      djangorestframework
      django-filter
      drf-spectacular
      psycopg2
      dj-database-url
      channels
      channels-redis
      daphne
      gunicorn
      django-prometheus
      prometheus-client
      redis
    ];

  # What backend/pyproject.toml lists under [project.optional-dependencies] test.
  testDependencies =
    ps: with ps; [
      pytest
      pytest-django
      pytest-timeout
      websockets
      schemathesis
    ];
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

  # The pins in backend/constraints.txt are for pip; here nixpkgs decides the versions
  # (Django's major is enforced by the assertion above).
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
