#!/usr/bin/env bash
# The UDFs' install: a fresh venv with only the core of terramind-openeo (what the PEP 723 header of udf/*.py
# asks a host back-end to install) plus the openEO client (which host back-ends provide) runs
# udf/terramind_generate.py through openeo.udf.run_udf_code on a real Sentinel-2 tile; prints the venv's size.
#   .ci/udf_core_install.sh [SHARED_DATA_DIR]   (default ../shared/data beside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
tile=$(ls "$data"/terramind-examples/S2L2A/*.tif 2>/dev/null | head -n 1 || true)
if [ -z "$tile" ]; then
  echo "[udf-core] skipped: no Sentinel-2 tile under $data/terramind-examples/S2L2A"
  exit 0
fi
tile=$(realpath "$tile")  # the check runs in a scratch directory: a relative path would not resolve there
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH  # the installed package, not this checkout
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/pip" install -q torch==2.13.0  # CPU torch first (a local file on these machines)
"$work/venv/bin/pip" install -q . "openeo>=0.40,<1"
(cd "$work" && "$work/venv/bin/python" "$OLDPWD/.ci/udf_core_check.py" "$OLDPWD/udf/terramind_generate.py" "$tile")
echo "[udf-core] installed size of the core venv: $(du -sh "$work/venv" | cut -f1)"
