#!/usr/bin/env bash
# Make the project's environment in .venv on a bare machine: the pinned torch / torchrec / fbgemm stack,
# this package (editable) and its test tools. Idempotent: a stamp of the inputs skips a repeat in ~0.1 s.
#   ./setup.sh            detect the device (cuda if nvidia-smi sees a GPU, else cpu)
#   DEVICE=cpu ./setup.sh force one
set -euo pipefail
cd "$(dirname "$0")"
VENV="${RECSYS_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [[ -z "${DEVICE:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
fi
case "$DEVICE" in cpu|cuda) ;; *) echo "setup.sh: DEVICE must be cpu or cuda, got '$DEVICE'" >&2; exit 2;; esac

stamp="$(cat pyproject.toml setup.sh packaging/constraints-"$DEVICE".txt packaging/fbgemm-gpu-cpu-shim/pyproject.toml \
         | sha256sum | cut -c1-16)-$DEVICE"
if [[ -f "$VENV/.setup-stamp" && "$(cat "$VENV/.setup-stamp")" == "$stamp" ]]; then
  echo "setup.sh: $VENV is up to date ($DEVICE)"; exit 0
fi

echo "setup.sh: building $VENV for $DEVICE" >&2
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
if [[ "$DEVICE" == cpu ]]; then
  # torchrec requires "fbgemm-gpu"; offer the CPU alias so pip never fetches the CUDA build (STACK.md).
  wheels="$VENV/local-wheels"; mkdir -p "$wheels"
  "${PIP[@]}" wheel -q --no-deps -w "$wheels" packaging/fbgemm-gpu-cpu-shim
  "${PIP[@]}" install -q -f "$wheels" -c packaging/constraints-cpu.txt -e ".[test]"
else
  "${PIP[@]}" install -q --extra-index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" \
      -c packaging/constraints-cuda.txt -e ".[test]"
fi
"${PIP[@]}" check
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, torch; print('setup.sh: torch', torch.__version__, '| torchrec', torchrec.__version__ if hasattr(torchrec,'__version__') else '1.8.0')"
echo "$stamp" > "$VENV/.setup-stamp"
