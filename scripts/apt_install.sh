# apt_install.sh — sourced by the setup scripts: which Debian packages are missing, and installing them.
#   apt_missing PACKAGE...       prints, one a line, those dpkg does not have installed
#   apt_install WHO PACKAGE...   installs them with apt-get (through sudo unless root), saying so as WHO on stderr
apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

apt_install() {
  local who=$1 sudo=""
  shift
  [ $# -gt 0 ] || return 0
  echo "$who: installing $*" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  # env: sudo's own environment would drop an exported DEBIAN_FRONTEND
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
