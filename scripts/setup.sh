#!/usr/bin/env bash
# Create .venv and install the project. torch==2.13.0 first: on the CPU machines here it is a local
# CPU wheel; any other torch spec would pull several GB of CUDA wheels.
#   V4S_FRESH_VENV=1 bash scripts/setup.sh   remove .venv first: a new user's install (CI sets it)
#   bash scripts/setup.sh --floors DIR        (after an install) resolve the project as a new user would with
#       numpy, OpenCV and diffusers at the floors pyproject.toml declares, and put the packages whose
#       versions differ from .venv's into DIR: `PYTHONPATH=DIR python -m pytest ...` runs the lower ends.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--floors" ]; then
  FLOORS_DIR=${2:?usage: scripts/setup.sh --floors DIR}
  . .venv/bin/activate
  mkdir -p "$FLOORS_DIR"
  python - "$FLOORS_DIR" <<'PY'
import json, re, subprocess, sys, tempfile
from importlib.metadata import distributions, requires, version

out = sys.argv[1]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
try:  # the ranges as pyproject.toml declares them now; the installed metadata on Python 3.10
    import tomllib

    deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
except ImportError:
    deps = requires("video4spatial-agent")
cons = [f"torch=={version('torch')}"]  # the installed torch: any other spec downloads GBs
for r in deps:
    m = re.match(r"(numpy|opencv-python-headless|diffusers)\s*([^;]*)", r)
    if m:
        lo = re.search(r">=\s*([0-9.]+)", m[2])
        assert lo, f"no lower bound to test in {r!r}"
        cons.append(f"{m[1]}=={lo[1]}.*")
assert len(cons) == 4, cons
with tempfile.TemporaryDirectory() as tmp:
    with open(f"{tmp}/c.txt", "w") as f:
        f.write("\n".join(cons) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                    "--report", f"{tmp}/r.json", "-c", f"{tmp}/c.txt", "-e", ".[dev]"], check=True)
    report = json.load(open(f"{tmp}/r.json"))
have = {norm(d.metadata["Name"]): d.version for d in distributions()}
pins = [f"{m['name']}=={m['version']}" for m in (i["metadata"] for i in report["install"])
        if norm(m["name"]) != "video4spatial-agent" and have.get(norm(m["name"])) != m["version"]]
print("floors:", " ".join(cons[1:]), "-> overlay:", " ".join(pins), flush=True)
if pins:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", out, *pins],
                   check=True)
PY
  exit 0
fi
if [ "${V4S_FRESH_VENV:-0}" = 1 ]; then rm -rf .venv; fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${V4S_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev]"
