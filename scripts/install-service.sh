#!/usr/bin/env bash
# install-service.sh: installs moat as a boot service: the binary (and its guest agent) in
# /usr/local/bin and contrib/systemd/moat.service in /etc/systemd/system, enabled and started
# when systemd runs this machine. Run scripts/setup.sh (which builds target/release/moat) first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install-service.sh: run as root" >&2; exit 1; }
[ -x target/release/moat ] || { echo "install-service.sh: no target/release/moat (run scripts/setup.sh)" >&2; exit 1; }
install -m 0755 target/release/moat /usr/local/bin/moat
[ -x target/release/moat-agent ] && install -m 0755 target/release/moat-agent /usr/local/bin/moat-agent
install -m 0644 contrib/systemd/moat.service /etc/systemd/system/moat.service
systemd-analyze verify /etc/systemd/system/moat.service
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now moat.service
  echo "install-service.sh: moat.service enabled and started (DOCKER_HOST=unix:///run/moat/moat.sock)"
else
  echo "install-service.sh: installed; systemd is not running this machine, so nothing was enabled:" \
       "start 'moat serve' from its init system instead" >&2
fi
