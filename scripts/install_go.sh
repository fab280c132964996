#!/usr/bin/env bash
# Prints the path of a Go toolchain new enough to build helm (the chart tests' only Go need).
# Uses `go` from PATH when it is >= 1.24; otherwise fetches the official toolchain once from the
# Go module proxy (the same zip GOTOOLCHAIN=auto downloads: golang.org/toolchain) into .tools/,
# since Debian bookworm's golang-go (1.19) is too old and no other Go source is reachable.
set -euo pipefail
GO_TOOLCHAIN="${GO_TOOLCHAIN:-go1.25.14}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.tools/$GO_TOOLCHAIN"

new_enough() {  # go version go1.X.Y ... -> X >= 24
  local v
  v="$("$1" version 2>/dev/null | sed -n 's/.*go1\.\([0-9]*\).*/\1/p')"
  [ -n "$v" ] && [ "$v" -ge 24 ]
}

if [ -z "${FORCE_DOWNLOAD:-}" ] && command -v go >/dev/null 2>&1 && new_enough "$(command -v go)"; then
  command -v go
  exit 0
fi
if [ -x "$DEST/bin/go" ] && new_enough "$DEST/bin/go"; then
  echo "$DEST/bin/go"
  exit 0
fi
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "install_go.sh: no Go toolchain for $(uname -m)" >&2; exit 1 ;;
esac
url="https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-${GO_TOOLCHAIN}.linux-${arch}.zip"
echo "fetching $GO_TOOLCHAIN from the Go module proxy" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/go.zip" "$url"
# a module zip: every file under golang.org/toolchain@<version>/, without permission bits
python3 - "$tmp/go.zip" "$tmp/out" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    for info in z.infolist():
        at = info.filename.find("@")  # golang.org/toolchain@<version>/<path>
        cut = info.filename.find("/", at) if at >= 0 else -1
        name = info.filename[cut + 1:] if cut >= 0 else ""
        if not name or name.endswith("/"):
            continue
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as f, open(path, "wb") as g:
            g.write(f.read())
        if name.startswith("bin/") or name.startswith("pkg/tool/"):
            os.chmod(path, 0o755)
PY
mkdir -p "$ROOT/.tools"
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
new_enough "$DEST/bin/go" || { echo "install_go.sh: the fetched toolchain does not run" >&2; exit 1; }
echo "$DEST/bin/go"
