# apt_install.sh — sourced by the setup scripts: which Debian packages are missing, and installing them.
#   apt_missing PACKAGE...       prints, one a line, those dpkg does not have installed
#   node_missing                 prints nodejs and npm unless both commands are there (any packaging of them serves)
#   as_root COMMAND...           runs it through sudo unless this is root
#   apt_install WHO PACKAGE...   installs them with apt-get, saying so as WHO on stderr
apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

node_missing() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then printf 'nodejs\nnpm\n'; fi
}

as_root() {
  if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi
}

apt_install() {
  local who=$1
  shift
  [ $# -gt 0 ] || return 0
  echo "$who: installing $*" >&2
  # env: sudo's own environment would drop an exported DEBIAN_FRONTEND
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
