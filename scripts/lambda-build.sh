#!/usr/bin/env bash
# Release builds of the Lambda functions, exactly as `sam build` makes them (SAM runs
# `cargo lambda build --release --bin <Binary>` for each function of infra/template.yaml): one
# cargo invocation for all of them, so the dependencies are compiled once.
#
#   scripts/lambda-build.sh [--arm64] [--with-hello] [--zip]
#
# --arm64       build for Graviton (the template's default Architecture); needs the Rust target:
#               `rustup target add aarch64-unknown-linux-gnu`. Default: x86_64.
# --with-hello  also build the init-time benchmark's hello-world (bench/init-time).
# --zip         also write target/lambda/<name>/bootstrap.zip, the deployment package.
#
# Functions are the template's `Binary:` entries that exist as binaries in the workspace (one
# that is in the template but not yet in the tree is reported and skipped). Prints the size of
# each bootstrap and of its zip.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=(--x86-64)
extra=()
zip=0
for arg in "$@"; do
  case "$arg" in
    --arm64) arch=(--arm64) ;;
    --with-hello) extra+=(hello) ;;
    --zip) zip=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

PATH="$(bash infra/tools.sh):$PATH"
export PATH

# The binaries the workspace has, and the ones the template wants.
have=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
print("\n".join(t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]))')
bins=()
for name in $(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\).*/\1/p' infra/template.yaml) "${extra[@]}"; do
  if grep -qx "$name" <<<"$have"; then
    bins+=("$name")
  else
    echo "note: $name is in infra/template.yaml but not a binary of the workspace yet: skipped" >&2
  fi
done

args=()
for name in "${bins[@]}"; do args+=(--bin "$name"); done
start=$SECONDS
cargo lambda build --release --locked "${arch[@]}" "${args[@]}"
echo "cargo lambda build: $((SECONDS - start)) s for ${bins[*]}"

target_dir=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
python3 - "$target_dir/lambda" "$zip" "${bins[@]}" <<'PY'
import io, os, sys, zipfile
base, write_zip, names = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
print(f"| function | bootstrap | zipped |")
print(f"| --- | --- | --- |")
for name in names:
    path = os.path.join(base, name, "bootstrap")
    data = open(path, "rb").read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, data)
    if write_zip:
        open(os.path.join(base, name, "bootstrap.zip"), "wb").write(buf.getvalue())
    print(f"| {name} | {len(data) / 1e6:.1f} MB | {len(buf.getvalue()) / 1e6:.1f} MB |")
PY
