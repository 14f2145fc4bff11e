#!/bin/sh
# Install sockservice from this checkout as a systemd service, or remove it.
#
#   sh deploy/install.sh [--socket] [--root DIR]       install, or upgrade in place
#   sh deploy/install.sh --uninstall [--root DIR]      remove everything installed
#
# Installing makes the venv /opt/sockservice (deploy/venv.sh), installs the
# units, writes a commented /etc/sockservice/sockservice.toml (the options)
# and sockservice.env (reactor, extra options) unless they exist, enables and
# (re)starts the service and opens its ports in an active host firewall (ufw
# or firewalld). Running it again upgrades to the checkout and restarts; an
# options file of an older install that sets MODE, PORT or INTERFACE has them
# moved into sockservice.toml. --socket
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

# The TCP ports sockservice.toml listens on (port = N, or tcp:N and ssl:N in
# listen), for the firewall.
configured_ports() {
    ports=$(sed -e 's/#.*//' "$config/sockservice.toml" 2>/dev/null |
        sed -n -e 's/^port *= *\([0-9][0-9]*\) *$/\1/p' \
            -e '/^listen *=/{' -e ':a' -e '/]/!{' -e 'N' -e 'ba' -e '}' \
            -e 's/[^"]*"\(tcp6\{0,1\}\|ssl\):\(port=\)\{0,1\}\([0-9][0-9]*\)[^"]*"/\3\n/g' \
            -e 'p' -e '}' |
        grep -x '[0-9][0-9]*' | sort -un)
    echo "${ports:-12345}"
}

# An options file from before sockservice.toml set MODE, PORT and INTERFACE,
# which the service no longer reads: move them into a new sockservice.toml,
# or say what to write there when it exists already.
migrate_env() {
    env=$config/sockservice.env
    [ -e "$env" ] || return 0
    moved=""
    toml=""
    for name in MODE PORT INTERFACE; do
        value=$(sed -n "s/^$name=\(.*\)\$/\1/p" "$env" | tail -n 1)
        [ -n "$value" ] || continue
        key=$(echo "$name" | tr 'A-Z' 'a-z')
        case $name in PORT) line="$key = $value" ;; *) line="$key = \"$value\"" ;; esac
        moved="$moved $name"
        toml="$toml$line
"
    done
    [ -n "$moved" ] || return 0
    if [ -e "$config/sockservice.toml" ]; then
        say "$env sets$moved, which sockservice no longer reads: put these lines in $config/sockservice.toml and delete them from $env:"
        printf '%s' "$toml"
        return 0
    fi
    { printf '# Moved from sockservice.env by install.sh.\n%s\n' "$toml"; cat "$checkout/deploy/sockservice.toml"; } \
        > "$config/sockservice.toml"
    chmod 0644 "$config/sockservice.toml"
    sed -i -e 's/^\(MODE\|PORT\|INTERFACE\)=/# moved to sockservice.toml: &/' "$env"
    say "moved$moved from $env to $config/sockservice.toml"
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
    ports=$(configured_ports)
    if [ $live = yes ]; then
        systemctl disable --now sockservice.socket sockservice.service 2>/dev/null || true
    elif [ -e "$units/sockservice.service" ]; then
        systemctl --root="$root" disable sockservice.socket sockservice.service 2>/dev/null || true
    fi
    rm -rf "$units/sockservice.service" "$units/sockservice.socket" "$dropins" "$venv" "$config"
    if [ $live = yes ]; then
        systemctl daemon-reload
        for port in $ports; do firewall remove "$port"; done
    fi
    say "removed sockservice from $root"
}

install_() {
    sh "$checkout/deploy/venv.sh" "$venv"
    # twistd finds its plugins through a cache the service cannot write: make it now.
    "$venv/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
    install -d -m 0755 "$units" "$config"
    install -m 0644 "$checkout/deploy/sockservice.service" "$units/sockservice.service"
    migrate_env
    if [ ! -e "$config/sockservice.env" ]; then
        install -m 0644 "$checkout/deploy/sockservice.env" "$config/sockservice.env"
    fi
    if [ ! -e "$config/sockservice.toml" ]; then
        install -m 0644 "$checkout/deploy/sockservice.toml" "$config/sockservice.toml"
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
    for port in $(configured_ports); do firewall allow "$port"; done
    say "installed sockservice in $root ($([ $socket = yes ] && echo socket-activated || echo plain))"
}

if [ $action = uninstall ]; then
    uninstall
else
    install_
fi
