#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine: system tools, a venv, the
# Python packages (pinned through constraints.txt). Safe to re-run: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)  # Celery broker of the distributed tests
# headless browser for the screenshot test of the Label Studio labeling interface
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "setup: missing ${need_apt[*]}; install them with your package manager (Debian: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  echo "setup: installing ${need_apt[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency declarations change.
stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages (pinned by constraints.txt)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -c constraints.txt -e '.[dev,annotation,distributed]'
  # whisperx pins torch~=2.8 and friends; its code runs with the versions above.
  "$VENV/bin/pip" install -q --no-deps whisperx==3.8.6
  # Resemblyzer's voice encoder weights ship in its wheel; its own imports (webrtcvad, typing) are
  # never used: pipelines/conversation/voices.py builds the network and reads only the weights file.
  "$VENV/bin/pip" install -q --no-deps resemblyzer==0.1.4
  # The registry's torchaudio is a CUDA build whose compiled libs cannot load on a CPU
  # machine; without them it imports in pure-Python mode and loads audio via torchcodec.
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -f "$site"/torchaudio/lib/*.so
  echo "$want" > "$stamp"
else
  echo "setup: Python packages up to date"
fi
