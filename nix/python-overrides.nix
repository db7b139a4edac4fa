# Python package overrides from nix/python-versions.json: every entry with an `override` is built
# from its PyPI sdist at exactly the version CI installs (backend/constraints.txt), so what Nix
# ships is what the tests ran. Use as `packageOverrides` of a Python package set:
#
#   python3.override { packageOverrides = import ./python-overrides.nix { inherit lib fetchPypi; } [ "backend" ]; }
#
# The argument lists the projects (the table's `sets`) whose packages to override.
# The sdists' build requirements are not checked (`--skip-dependency-check`): they may name a
# newer setuptools or uv_build than nixpkgs has, which builds them all the same. nixpkgs' checks
# are written for nixpkgs' versions, so they are off; this project's test suites are the check.
{ lib, fetchPypi }:
sets:
final: prev:
let
  table = lib.importJSON ./python-versions.json;
  entries = builtins.filter (
    entry: entry ? override && lib.any (set: builtins.elem set sets) entry.sets
  ) table.python;

  # What differs from nixpkgs' own derivation beyond version, source and build system.
  adjustments = {
    # 2.5.0 declares Django (2.4.1 did not); nixpkgs' derivation only lists prometheus-client.
    django-prometheus = old: {
      dependencies = (old.dependencies or [ ]) ++ [ final.django ];
    };
    # The sdist ships the built web UI (locust/webui/dist) and no tests: nixpkgs' yarn build of the
    # UI (preBuild) and its test patches (postPatch) do not apply. socketio/engineio are direct
    # dependencies since 2.44; geventhttpclient >= 2.5.1 is newer than nixpkgs' and relaxed
    # (nixpkgs' derivation relaxes requests already).
    locust = old: {
      # nixpkgs' yarn build of its own version's UI: not needed, not built.
      webui = null;
      preBuild = "";
      postPatch = "";
      postInstall = (old.postInstall or "") + ''
        test -f "$out/${final.python.sitePackages}/locust/webui/dist/index.html" \
          || { echo "the locust sdist has no built web UI" >&2; exit 1; }
      '';
      dependencies =
        (old.dependencies or [ ])
        ++ [
          final.python-engineio
          final.python-socketio
        ]
        ++ (final.python-socketio.optional-dependencies.client or [ ]);
      pythonRelaxDeps =
        if (old.pythonRelaxDeps or [ ]) == true then
          true
        else
          (old.pythonRelaxDeps or [ ])
          ++ [ "geventhttpclient" ];
    };
  };

  override =
    entry:
    prev.${entry.attr}.overridePythonAttrs (
      old:
      {
        inherit (entry.override) version;
        src = fetchPypi { inherit (entry.override) pname version hash; };
        build-system = map (name: final.${name}) entry.override.buildSystem;
        pypaBuildFlags = [ "--skip-dependency-check" ];
        doCheck = false;
        # Newer nixpkgs derivations build meta.changelog from a GitHub `src.tag` this source lacks.
        meta = (old.meta or { }) // {
          changelog = "https://pypi.org/project/${entry.override.pname}/${entry.override.version}/";
        };
      }
      // (adjustments.${entry.attr} or (_: { })) old
    );
in
lib.listToAttrs (map (entry: lib.nameValuePair entry.attr (override entry)) entries)
