#!/bin/sh
# Install sockservice from this checkout as a systemd service, or remove it.
#
#   sh deploy/install.sh [--socket] [--root DIR]       install, or upgrade in place
#   sh deploy/install.sh --uninstall [--root DIR]      remove everything installed
#
# Installing makes the venv /opt/sockservice (deploy/venv.sh), installs the
# units, keeps an existing /etc/sockservice/sockservice.env, enables and
# (re)starts the service and opens the port in an active host firewall (ufw or
# firewalld). Running it again upgrades to the checkout and restarts. --socket
# installs the socket-activated variant (sockservice.socket holds the port);
# without it, the plain one (switching back removes the socket). --root DIR
# installs under DIR instead of / and only enables the units there: nothing is
# started and no firewall is touched (for tests and image builds).
set -eu
usage="usage: sh deploy/install.sh [--socket] [--uninstall] [--root DIR]"
checkout=$(cd "$(dirname "$0")/.." && pwd)
root=/
socket=no
action=install
while [ $# -gt 0 ]; do
    case $1 in
        --socket) socket=yes ;;
        --uninstall) action=uninstall ;;
        --root) [ $# -gt 1 ] || { echo "$usage" >&2; exit 2; }; root=$2; shift ;;
        --root=*) root=${1#--root=} ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
root=$(cd "$root" && pwd)
if [ "$root" = / ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing in / needs root: sudo sh deploy/install.sh $*" >&2
    exit 1
fi
prefix=${root%/}
venv=$prefix/opt/sockservice
units=$prefix/etc/systemd/system
dropins=$units/sockservice.service.d
config=$prefix/etc/sockservice
# Start, stop and firewall only for a real install on a host that runs systemd.
live=no
if [ "$root" = / ] && [ -d /run/systemd/system ]; then
    live=yes
fi

say() {
    echo "install.sh: $*"
}

systemctl_() {
    if [ $live = yes ]; then
        systemctl "$@"
    else
        systemctl --root="$root" "$@"
    fi
}

# The port from the options file, for the firewall.
configured_port() {
    port=$(sed -n 's/^PORT=\([0-9][0-9]*\)$/\1/p' "$config/sockservice.env" 2>/dev/null | tail -n 1)
    echo "${port:-12345}"
}

# firewall allow|remove PORT: in ufw or firewalld if one is active.
firewall() {
    [ $live = yes ] || return 0
    if command -v ufw >/dev/null 2>&1 && ufw status | grep -q '^Status: active'; then
        if [ "$1" = allow ]; then ufw allow "$2/tcp"; else ufw delete allow "$2/tcp" || true; fi
    elif command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
        if [ "$1" = allow ]; then flag=--add-port; else flag=--remove-port; fi
        firewall-cmd --quiet --permanent "$flag=$2/tcp" || true
        firewall-cmd --quiet --reload
    else
        say "no active ufw or firewalld: no host firewall rule to change for TCP $2"
    fi
}

uninstall() {
    port=$(configured_port)
    if [ $live = yes ]; then
        systemctl disable --now sockservice.socket sockservice.service 2>/dev/null || true
    elif [ -e "$units/sockservice.service" ]; then
        systemctl --root="$root" disable sockservice.socket sockservice.service 2>/dev/null || true
    fi
    rm -rf "$units/sockservice.service" "$units/sockservice.socket" "$dropins" "$venv" "$config"
    if [ $live = yes ]; then
        systemctl daemon-reload
        firewall remove "$port"
    fi
    say "removed sockservice from $root"
}

install_() {
    sh "$checkout/deploy/venv.sh" "$venv"
    # twistd finds its plugins through a cache the service cannot write: make it now.
    "$venv/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
    install -d -m 0755 "$units" "$config"
    install -m 0644 "$checkout/deploy/sockservice.service" "$units/sockservice.service"
    if [ ! -e "$config/sockservice.env" ]; then
        install -m 0644 "$checkout/deploy/sockservice.env" "$config/sockservice.env"
    fi
    if [ $socket = yes ]; then
        install -d -m 0755 "$dropins"
        install -m 0644 "$checkout/deploy/socket-activated.conf" "$dropins/socket-activated.conf"
        install -m 0644 "$checkout/deploy/sockservice.socket" "$units/sockservice.socket"
    else
        if [ -e "$units/sockservice.socket" ]; then
            systemctl_ disable sockservice.socket
            [ $live = no ] || systemctl stop sockservice.socket
        fi
        rm -f "$units/sockservice.socket" "$dropins/socket-activated.conf"
        rmdir "$dropins" 2>/dev/null || true
    fi
    [ $live = no ] || systemctl daemon-reload
    if [ $socket = yes ]; then
        # The service is started by the first connection; the socket keeps the port.
        systemctl_ disable sockservice.service >/dev/null 2>&1 || true
        systemctl_ enable sockservice.socket
        if [ $live = yes ]; then
            systemctl stop sockservice.service
            systemctl start sockservice.socket
        fi
    else
        systemctl_ enable sockservice.service
        [ $live = no ] || systemctl restart sockservice.service
    fi
    firewall allow "$(configured_port)"
    say "installed sockservice in $root ($([ $socket = yes ] && echo socket-activated || echo plain))"
}

if [ $action = uninstall ]; then
    uninstall
else
    install_
fi
