#!/usr/bin/env bash
# Development / CI environment: .venv with torch (CPU, pinned), the project and its test tools,
# plus the system packages the microphone tests need (PortAudio, ALSA plugins, PulseAudio).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# espeak-ng: synthetic speech for the sanity-set tests (tests/test_speech_presence.py; skipped without it).
for pkg in portaudio19-dev libasound2-plugins alsa-utils pulseaudio pulseaudio-utils espeak-ng; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need_apt[*]}" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}") >&2 \
      || echo "warning: could not install ${need_apt[*]}; microphone tests will be skipped" >&2
  else
    echo "warning: missing ${need_apt[*]} (needs root + apt); microphone and espeak-ng tests will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[train,dev,bench,serve]"
# PyAudio has no Linux wheels: it compiles against PortAudio (and needs a C compiler and the
# Python headers). Installed on its own so that a failed build costs only the microphone tests
# (they skip with the reason), not the whole environment.
if dpkg -s portaudio19-dev >/dev/null 2>&1; then
  python -m pip install -q -e ".[mic]" \
    || echo "warning: PyAudio did not build (needs gcc and the Python headers); microphone tests will be skipped" >&2
fi
