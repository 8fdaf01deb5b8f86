# Shared by the scripts in this folder (sourced, not run).

# Installs Debian packages with apt-get, as root or through sudo.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "missing $*: install it (apt-get install $*)" >&2
            exit 1
        fi
        sudo="sudo"
    fi
    echo "installing $* (Debian packages)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# bubblewrap: the sandbox a node runs task processes in. Without it a node refuses tasks
# (unless started with --sandbox off).
ensure_bubblewrap() {
    if ! command -v bwrap >/dev/null 2>&1; then
        apt_install bubblewrap
    fi
}
