#!/bin/sh
# Make a virtualenv at DIR with this checkout installed in it, EXTRAS (such as
# "test") included. With the "test" extra the install is editable, so the
# tests (and the real twistd they start) run this working tree, never a copy
# made at install time; otherwise it is a plain install, as users and
# deploy/install.sh want. On Debian/Ubuntu, python3 makes virtualenvs only
# with the python3-venv package, so that is installed first when it is missing.
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
case ",$extras," in
*,test,*) editable=-e ;;
*) editable= ;;
esac
"$dir/bin/python" -m pip install -q $editable "$checkout${extras:+[$extras]}"
