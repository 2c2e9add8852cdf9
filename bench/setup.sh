#!/usr/bin/env bash
# Install what the benchmark needs besides the project's own setup: the two peer filesystems
# (httpdirfs and rclone, from Debian packages), FUSE 3 and ffmpeg (to make the test audio).
# Idempotent: packages already installed are skipped, so a second run returns at once.
set -euo pipefail

PACKAGES=(fuse3 httpdirfs rclone ffmpeg curl streamlink)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'bench/setup.sh: installing Debian packages: %s\n' "${missing[*]}" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
