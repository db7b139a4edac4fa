# The Locust load test suite and SLA gate (loadtest/) as `workorder-loadtest`.
#
#   nix run .#loadtest -- --host https://staging.example.org --users 100 --spawn-rate 10 \
#     --run-time 60s --report-dir ./report
#
# Exit codes (the gate's contract): 0 SLA met, 1 SLA missed, 2 invalid arguments or setup failure.
{
  lib,
  python3,
}:
let
  pyproject = lib.importTOML ../loadtest/pyproject.toml;

  runtimeDependencies =
    ps: with ps; [
      locust
      websocket-client
    ];

  testDependencies =
    ps: with ps; [
      pytest
      pytest-timeout
    ];
in
python3.pkgs.buildPythonApplication {
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

  build-system = [ python3.pkgs.setuptools ];

  dependencies = runtimeDependencies python3.pkgs;

  # loadtest/pyproject.toml asks for locust>=2.37; nixpkgs decides the exact version.
  pythonRelaxDeps = true;

  # `checks.<system>.loadtest-tests` runs loadtest/tests.
  doCheck = false;
  pythonImportsCheck = [ "workorder_loadtest" ];

  passthru = {
    python = python3;
    inherit runtimeDependencies testDependencies;
  };

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "workorder-loadtest";
    platforms = lib.platforms.linux;
  };
}
