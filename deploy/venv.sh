#!/bin/sh
# Make a virtualenv at DIR with this checkout installed in it, EXTRAS (such as
# "test") included. On Debian/Ubuntu, python3 makes virtualenvs only with the
# python3-venv package, so that is installed first when it is missing.
set -eu
usage="usage: sh deploy/venv.sh DIR [EXTRAS]"
dir=${1:?$usage}
extras=${2:-}
checkout=$(cd "$(dirname "$0")/.." && pwd)

if ! python3 -m ensurepip --version >/dev/null 2>&1; then
    echo "venv.sh: python3 cannot make virtualenvs yet; installing python3-venv" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
fi
python3 -m venv "$dir"
"$dir/bin/python" -m pip install -q "$checkout${extras:+[$extras]}"
