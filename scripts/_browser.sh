# Sourced by scripts/test: the browser tests (tests/browser) need the distribution's
# Chromium and chromedriver; install them when missing (apt-get, as root or with sudo).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi
