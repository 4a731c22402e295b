#!/usr/bin/env bash
# torch's CPU build for the image, so that the CPU image never pulls a CUDA wheel (docker/Dockerfile).
#   docker/cpu-torch.sh install VENV   make VENV and put torch==<setup.sh's pin>+cpu in it, from the PyTorch CPU
#                                      index when it answers, else from a local wheel folder (PIP_FIND_LINKS)
#   docker/cpu-torch.sh check VENV     fail if VENV holds a CUDA torch or any nvidia-* package
# setup.sh then finds torch==2.13.0 satisfied (PEP 440: the +cpu label matches) and installs the rest.
set -euo pipefail
cmd="$1"; venv="$2"
index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pin="$(sed -n 's/^torch==//p' packaging/constraints-cpu.txt)"
[[ -n "$pin" ]] || { echo "cpu-torch.sh: no torch== pin in packaging/constraints-cpu.txt" >&2; exit 2; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
case "$cmd" in
  install)
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    if "$venv/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
         "$index" 2>/dev/null; then
      echo "cpu-torch.sh: torch==$pin+cpu from $index" >&2
      "${pip[@]}" install -q --extra-index-url "$index" "torch==$pin+cpu"
    else
      echo "cpu-torch.sh: $index does not answer; torch==$pin+cpu from PIP_FIND_LINKS=${PIP_FIND_LINKS:-(unset)}" >&2
      "${pip[@]}" install -q "torch==$pin+cpu" || {
        echo "cpu-torch.sh: no torch==$pin+cpu wheel: offer the PyTorch CPU index (TORCH_CPU_INDEX) or a folder" \
             "holding the wheel (PIP_FIND_LINKS)" >&2; exit 1; }
    fi ;;
  check)
    "$venv/bin/python" -c "import sys, torch; sys.exit(f'cpu-torch.sh: torch {torch.__version__} is a CUDA build' \
                           if torch.version.cuda else 0)"
    cuda="$("${pip[@]}" list --format=freeze | grep -i '^nvidia-' || true)"
    [[ -z "$cuda" ]] || { echo "cpu-torch.sh: CUDA packages in the CPU image: $cuda" >&2; exit 1; } ;;
  *) echo "usage: cpu-torch.sh install|check VENV" >&2; exit 2 ;;
esac
