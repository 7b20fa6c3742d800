# Shared by install-server.sh and install-client.sh (sourced, not run): the venv, the unit file,
# systemd detection. Every step checks first, so running an installer again changes nothing.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*"; }
die() { printf '%s: %s\n' "$PROGRAM" "$*" >&2; exit 2; }

# A Python of at least 3.11 (as scripts/setup.sh picks one).
find_python() {
  local candidate
  for candidate in ${ARP_PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      printf '%s' "$candidate"; return 0
    fi
  done
  die "Python 3.11 or newer is required"
}

# The source's fingerprint: the venv is rebuilt only when the package changed.
source_stamp() {
  (cd "$ROOT" && find pyproject.toml src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
     ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# $1: the venv folder. Creates it and installs this checkout into it, unless it holds this
# very source already. ARP_PIP_ARGS adds pip arguments (the tests pass --no-deps).
install_venv() {
  local venv=$1 stamp
  stamp=$(source_stamp)
  if [ -f "$venv/.arp-installed-$stamp" ]; then
    say "  venv $venv is up to date"
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    say "  creating the venv $venv"
    "$(find_python)" -m venv "$venv"
  fi
  say "  installing ARP from $ROOT into $venv"
  # shellcheck disable=SC2086  # ARP_PIP_ARGS is a list of words on purpose
  "$venv/bin/python" -m pip install -q --disable-pip-version-check ${ARP_PIP_ARGS:-} "$ROOT"
  rm -f "$venv"/.arp-installed-*
  touch "$venv/.arp-installed-$stamp"
}

# An argument as systemd's ExecStart= reads it: quoted, with \ " % $ escaped.
unit_quote() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//%/%%}
  s=${s//\$/\$\$}
  printf '"%s"' "$s"
}

# $1 template, $2 destination, $3 ExecStart line, $4 optional PATH for Environment=PATH=.
# Writes the unit only when its content changes (sets UNIT_CHANGED to 1 or 0).
install_unit() {
  local template=$1 dest=$2 exec_line=$3 path_env=${4:-} tmp line
  tmp=$(mktemp)
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      ExecStart=*) line="ExecStart=$exec_line" ;;
      Environment=PATH=*) [ -z "$path_env" ] || line="Environment=$(unit_quote "PATH=$path_env")" ;;
    esac
    printf '%s\n' "$line"
  done <"$template" >"$tmp"
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    say "  unit $dest is up to date"
    UNIT_CHANGED=0
  else
    chmod 0644 "$tmp"
    mv "$tmp" "$dest"
    say "  installed the unit $dest"
    UNIT_CHANGED=1
  fi
}

# Whether systemd runs this machine (sd_booted's test), unless ARP_NO_SYSTEMCTL=1.
systemd_runs() {
  [ "${ARP_NO_SYSTEMCTL:-0}" != 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# Removes what an installer made: the unit, the venv, the prefix if it is then empty.
remove_install() {
  local unit=$1 venv=$2 prefix=$3
  if [ -f "$unit" ]; then rm -f "$unit"; say "  removed the unit $unit"; fi
  if [ -d "$venv" ]; then rm -rf "$venv"; say "  removed the venv $venv"; fi
  if [ -d "$prefix" ] && rmdir "$prefix" 2>/dev/null; then say "  removed $prefix"; fi
}

# The options both installers take, read into prefix and unit_dir (starting from the caller's
# defaults), uninstall, and flags (the program's own flags, after --).
parse_install_args() {
  local program=$1
  shift
  uninstall=0
  flags=()
  while [ $# -gt 0 ]; do
    case $1 in
      --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
      --prefix=*) prefix=${1#*=}; shift ;;
      --unit-dir) [ $# -ge 2 ] || die "--unit-dir needs a folder"; unit_dir=$2; shift 2 ;;
      --unit-dir=*) unit_dir=${1#*=}; shift ;;
      --no-start) export ARP_NO_SYSTEMCTL=1; shift ;;
      --uninstall) uninstall=1; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      --) shift; flags+=("$@"); break ;;
      *) die "unknown option $1 ($program flags go after --; --help lists the options)" ;;
    esac
  done
  case $prefix in /*) ;; *) die "--prefix must be an absolute path, not $prefix" ;; esac
  case $unit_dir in /*) ;; *) die "--unit-dir must be an absolute path, not $unit_dir" ;; esac
}
