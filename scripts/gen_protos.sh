#!/usr/bin/env bash
# Generates the Python stubs (messages, gRPC, and .pyi for both) of every proto
# under protos/ into the folder given (default gen/). One place, the whole tree.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# Absolute (symlinks kept: the venv's python must stay the venv's), as the
# generator runs from protos/ and make passes relative paths.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
out=$(absolute "${1:-$here/gen}")
py=$(absolute "${PYTHON:-$here/.venv/bin/python}")
rm -rf "$out/treasure"
mkdir -p "$out"
cd "$here/protos"
mapfile -t files < <(find treasure -name '*.proto' | sort)
"$py" -m grpc_tools.protoc -I . \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc" \
  --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  "${files[@]}" 2> >(grep -v "^Writing mypy" >&2)
# Make every generated folder a regular package.
find "$out/treasure" -type d -exec touch {}/__init__.py \;
