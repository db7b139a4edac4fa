# The Locust load test suite and SLA gate (loadtest/) as `workorder-loadtest`.
#
#   nix run .#loadtest -- --host https://staging.example.org --users 100 --spawn-rate 10 \
#     --run-time 60s --report-dir ./report
#
# Exit codes (the gate's contract): 0 SLA met, 1 SLA missed, 2 invalid arguments or setup failure.
{
  lib,
  python3,
  fetchPypi,
}:
let
  # locust and websocket-client at exactly the versions CI tests (nix/python-versions.json).
  python = python3.override {
    self = python;
    packageOverrides = import ./python-overrides.nix { inherit lib fetchPypi; } [ "loadtest" ];
  };

  pyproject = lib.importTOML ../loadtest/pyproject.toml;

  # Dependencies as nixpkgs attributes, from the version table (checked against pyproject.toml by
  # tests/nix/test_versions.py).
  table = lib.importJSON ./python-versions.json;
  dependenciesFor =
    role: ps:
    map (entry: ps.${entry.attr}) (
      builtins.filter (
        entry: entry.role == role && builtins.elem "loadtest" entry.sets && entry.attr != null
      ) table.python
    );
  runtimeDependencies = dependenciesFor "runtime";
  testDependencies = dependenciesFor "test";
in
python.pkgs.buildPythonApplication {
  pname = "workorder-loadtest";
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../loadtest;
    fileset = lib.fileset.unions [
      ../loadtest/pyproject.toml
      ../loadtest/workorder_loadtest
    ];
  };

  build-system = [ python.pkgs.setuptools ];

  dependencies = runtimeDependencies python.pkgs;

  # The versions come from the package set above; pyproject.toml's lower bounds hold for them.
  pythonRelaxDeps = true;

  # `checks.<system>.loadtest-tests` runs loadtest/tests.
  doCheck = false;
  pythonImportsCheck = [ "workorder_loadtest" ];

  passthru = {
    inherit python;
    inherit runtimeDependencies testDependencies;
  };

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "workorder-loadtest";
    platforms = lib.platforms.linux;
  };
}
