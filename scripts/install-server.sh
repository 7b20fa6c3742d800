#!/usr/bin/env bash
# Installs the ARP relay (arps) as a system service: a venv under a prefix, the systemd unit
# deploy/systemd/arps.service with the arps flags given, enabled and started when systemd runs.
# Running it again changes nothing unless the source or the flags changed. See docs/deploy.md.
#
#   sudo scripts/install-server.sh [options] [-- arps flags...]
#   sudo scripts/install-server.sh --uninstall [--prefix DIR] [--unit-dir DIR]
#
# Options (each also an environment variable):
#   --prefix DIR     ARP_PREFIX    where the venv goes (default /opt/arp: /opt/arp/venv)
#   --unit-dir DIR   ARP_UNIT_DIR  where the unit goes (default /etc/systemd/system)
#   --no-start       ARP_NO_SYSTEMCTL=1   install, but neither enable nor start
#   --uninstall      stop and disable the service, remove the unit and the venv
# arps flags default to: --bind 0.0.0.0 (ports 17001-17003). ARP_PIP_ARGS adds pip arguments.
set -euo pipefail
PROGRAM=install-server
# shellcheck source=scripts/install-common.sh
. "$(dirname "$0")/install-common.sh"

prefix=${ARP_PREFIX:-/opt/arp}
unit_dir=${ARP_UNIT_DIR:-/etc/systemd/system}
parse_install_args arps "$@"
[ ${#flags[@]} -gt 0 ] || flags=(--bind 0.0.0.0)

venv=$prefix/venv
unit=$unit_dir/arps.service
manage=0
if systemd_runs && [ "$unit_dir" = /etc/systemd/system ]; then manage=1; fi

if [ "$uninstall" = 1 ]; then
  say "Uninstalling the ARP relay"
  if [ "$manage" = 1 ]; then
    systemctl disable --now arps.service 2>/dev/null || true
  fi
  remove_install "$unit" "$venv" "$prefix"
  if [ "$manage" = 1 ]; then
    systemctl daemon-reload
    rm -rf /var/lib/arps /var/lib/private/arps
  fi
  say "The ARP relay is uninstalled."
  exit 0
fi

say "Installing the ARP relay (arps)"
mkdir -p "$prefix"
install_venv "$venv"
exec_line=$venv/bin/arps
for flag in "${flags[@]}"; do exec_line+=" $(unit_quote "$flag")"; done
install_unit "$ROOT/deploy/systemd/arps.service" "$unit" "$exec_line"

if [ "$manage" = 1 ]; then
  systemctl daemon-reload
  systemctl enable arps.service >/dev/null
  if [ "$UNIT_CHANGED" = 1 ]; then systemctl restart arps.service; else systemctl start arps.service; fi
  say "  the service is enabled and running (systemctl status arps)"
  logs="journalctl -u arps -f"
else
  if [ "${ARP_NO_SYSTEMCTL:-0}" = 1 ]; then
    say "  not enabling or starting the service (--no-start / ARP_NO_SYSTEMCTL=1)"
  elif [ "$unit_dir" != /etc/systemd/system ]; then
    say "  not enabling the service: the unit went to $unit_dir, not /etc/systemd/system"
  else
    say "  systemd is not running on this machine (no /run/systemd/system): the service is"
    say "  installed but not enabled; run $venv/bin/arps ${flags[*]} under your own supervisor"
  fi
  logs="journalctl -u arps -f (under systemd); arps logs to standard error"
fi

port=17003
for ((i = 0; i < ${#flags[@]}; i++)); do
  case ${flags[i]} in
    --public-port) port=${flags[i + 1]:-$port} ;;
    --public-port=*) port=${flags[i]#*=} ;;
  esac
done
host=$(hostname -f 2>/dev/null || hostname)
uninstall_cmd="$0 --uninstall"
[ "$prefix" = /opt/arp ] || uninstall_cmd+=" --prefix $prefix"
[ "$unit_dir" = /etc/systemd/system ] || uninstall_cmd+=" --unit-dir $unit_dir"
cat <<SUMMARY

ARP relay installed
  public URL  http://$host:$port/?token=<client_id>   (put HTTPS in front: docs/deploy.md)
  command     $exec_line
  unit        $unit
  logs        $logs
  uninstall   $uninstall_cmd
SUMMARY
