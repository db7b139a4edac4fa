# The option type of every secret file of the modules: an absolute path outside the Nix store (read
# at runtime as a systemd credential, never copied into the store), or null.
lib: lib.types.nullOr (
  lib.types.pathWith {
    inStore = false;
    absolute = true;
  }
)
