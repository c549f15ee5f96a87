#!/usr/bin/env bash
# Regenerates src/generated/tflite.rs from schema/schema.fbs with planus-cli 1.3
# (`cargo install planus-cli --version ~1.3`). planus 1.3's parser rejects the
# `(deprecated)` attribute on an enum value, a union member and a table, which
# upstream's schema uses for REDUCE_WINDOW / ReduceWindowOptions; we strip those
# three attributes in a temporary copy (reading is unaffected: the value, the union
# tag and the table keep their numbers) and leave the vendored file unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed -e 's/ (deprecated),/,/' -e 's/^table ReduceWindowOptions (deprecated) {/table ReduceWindowOptions {/' \
    "$here/schema.fbs" > "$tmp/schema.fbs"
(cd "$tmp" && planus rust -o "$here/../src/generated/tflite.rs" schema.fbs)
