# shellcheck shell=bash
# Steps "packages" (Debian's runc, CNI plugins, iptables, ...) and "build" (cluster/build.sh, cached).

step_packages_ok() {
  local p
  for p in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
  # Debian installs iptables with the nft backend as the default alternative; kube-proxy runs `iptables`.
  command -v iptables >/dev/null
}

# shellcheck disable=SC2086
step_packages_up() { bash "$CLUSTER_SRC/../scripts/apt-install.sh" $DEBIAN_PACKAGES; }

step_build_ok() { all_components_built; }
step_build_up() { bash "$CLUSTER_SRC/build.sh" all; }
