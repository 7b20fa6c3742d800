#!/usr/bin/env bash
# Installs the ARP client (arpc) as a systemd user service of the user who runs this: a venv
# under a prefix, the unit deploy/systemd/arpc.service with the arpc flags given, enabled and
# started when systemd runs. A user unit, so command mode reaches the agents' own home folders
# and logins. Running it again changes nothing unless the source, the flags or PATH changed.
#
#   scripts/install-client.sh [options] -- arpc flags...
#   scripts/install-client.sh --uninstall [--prefix DIR] [--unit-dir DIR]
#
# e.g. scripts/install-client.sh -- --server-addr relay.example.com --command-mode
#
# Options (each also an environment variable):
#   --prefix DIR     ARP_PREFIX    where the venv goes (default ~/.local/share/arp: .../arp/venv)
#   --unit-dir DIR   ARP_UNIT_DIR  where the unit goes (default ~/.config/systemd/user)
#   --no-start       ARP_NO_SYSTEMCTL=1   install, but neither enable nor start
#   --uninstall      stop and disable the service, remove the unit and the venv
# The unit runs with the PATH of this shell, so arpc finds the agent CLIs found here.
# ARP_PIP_ARGS adds pip arguments.
set -euo pipefail
PROGRAM=install-client
# shellcheck source=scripts/install-common.sh
. "$(dirname "$0")/install-common.sh"

data_home=${XDG_DATA_HOME:-$HOME/.local/share}
config_home=${XDG_CONFIG_HOME:-$HOME/.config}
default_unit_dir=$config_home/systemd/user
prefix=${ARP_PREFIX:-$data_home/arp}
unit_dir=${ARP_UNIT_DIR:-$default_unit_dir}
parse_install_args arpc "$@"

venv=$prefix/venv
unit=$unit_dir/arpc.service
manage=0
if systemd_runs && [ "$unit_dir" = "$default_unit_dir" ] && systemctl --user show-environment >/dev/null 2>&1; then
  manage=1
fi

if [ "$uninstall" = 1 ]; then
  say "Uninstalling the ARP client"
  if [ "$manage" = 1 ]; then
    systemctl --user disable --now arpc.service 2>/dev/null || true
  fi
  remove_install "$unit" "$venv" "$prefix"
  if [ "$manage" = 1 ]; then systemctl --user daemon-reload; fi
  say "The ARP client is uninstalled (its id and logs stay in ${config_home}/arpc and ${data_home}/arpc)."
  exit 0
fi

[ ${#flags[@]} -gt 0 ] ||
  die "give arpc's flags after --, e.g. -- --server-addr relay.example.com --command-mode"
server=127.0.0.1
for ((i = 0; i < ${#flags[@]}; i++)); do
  case ${flags[i]} in
    --server-addr) server=${flags[i + 1]:-$server} ;;
    --server-addr=*) server=${flags[i]#*=} ;;
  esac
done

say "Installing the ARP client (arpc) for $(id -un)"
mkdir -p "$prefix"
install_venv "$venv"
exec_line=$venv/bin/arpc
for flag in "${flags[@]}"; do exec_line+=" $(unit_quote "$flag")"; done
install_unit "$ROOT/deploy/systemd/arpc.service" "$unit" "$exec_line" "$PATH"

if [ "$manage" = 1 ]; then
  systemctl --user daemon-reload
  systemctl --user enable arpc.service >/dev/null
  if [ "$UNIT_CHANGED" = 1 ]; then
    systemctl --user restart arpc.service
  else
    systemctl --user start arpc.service
  fi
  say "  the service is enabled and running (systemctl --user status arpc)"
  say "  to keep it running while you are logged out: loginctl enable-linger $(id -un)"
  logs="journalctl --user -u arpc -f, and daily files in $data_home/arpc/logs/"
else
  if [ "${ARP_NO_SYSTEMCTL:-0}" = 1 ]; then
    say "  not enabling or starting the service (--no-start / ARP_NO_SYSTEMCTL=1)"
  elif [ "$unit_dir" != "$default_unit_dir" ]; then
    say "  not enabling the service: the unit went to $unit_dir, not $default_unit_dir"
  else
    say "  systemd is not running here (no /run/systemd/system, or no user manager): the"
    say "  service is installed but not enabled; run $venv/bin/arpc ${flags[*]} another way"
  fi
  logs="daily files in $data_home/arpc/logs/ (and journalctl --user -u arpc under systemd)"
fi

uninstall_cmd="$0 --uninstall"
[ "$prefix" = "$data_home/arp" ] || uninstall_cmd+=" --prefix $prefix"
[ "$unit_dir" = "$default_unit_dir" ] || uninstall_cmd+=" --unit-dir $unit_dir"
cat <<SUMMARY

ARP client installed
  public URL  http://$server:17003/?token=<client_id>   (arpc prints it when it registers:
              the "Public URL" line in its log)
  command     $exec_line
  unit        $unit
  logs        $logs
  uninstall   $uninstall_cmd
SUMMARY
