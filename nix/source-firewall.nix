# Firewall rules that admit TCP ports from given source addresses only, for the nftables and the
# iptables backends of nixpkgs' firewall (`networking.firewall.extraInputRules` and
# `networking.firewall.extraCommands`; the other one stays empty, as each backend asserts).
#
#   imports ... (import ./source-firewall.nix lib) {
#     nftables = config.networking.nftables.enable;
#     rules = [ { sources = [ "10.0.0.5" ]; ports = [ 8000 8002 ]; } ];
#   }
lib:
{ nftables, rules }:
let
  inherit (lib) concatMap concatStringsSep filter;
  isIPv6 = address: lib.hasInfix ":" address;
  joined = values: concatStringsSep ", " (map toString values);
  usable = map (rule: {
    sources = lib.unique rule.sources;
    ports = lib.unique rule.ports;
  }) (filter (rule: rule.sources != [ ] && rule.ports != [ ]) rules);

  nftLines = concatMap (
    rule:
    let
      v4 = filter (a: !isIPv6 a) rule.sources;
      v6 = filter isIPv6 rule.sources;
      ports = "tcp dport { ${joined rule.ports} } accept";
    in
    lib.optional (v4 != [ ]) "ip saddr { ${joined v4} } ${ports}"
    ++ lib.optional (v6 != [ ]) "ip6 saddr { ${joined v6} } ${ports}"
  ) usable;

  iptablesLines = concatMap (
    rule:
    concatMap (
      source:
      map (
        port:
        "${
          if isIPv6 source then "ip6tables" else "iptables"
        } -w -A nixos-fw -p tcp -s ${source} --dport ${toString port} -j nixos-fw-accept"
      ) rule.ports
    ) rule.sources
  ) usable;
in
{
  networking.firewall.extraInputRules = lib.mkIf (nftables && nftLines != [ ]) (
    concatStringsSep "\n" nftLines
  );
  networking.firewall.extraCommands = lib.mkIf (!nftables && iptablesLines != [ ]) (
    concatStringsSep "\n" iptablesLines
  );
}
