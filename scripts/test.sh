#!/usr/bin/env bash
# The test command (README): sets up the oracles, then runs every test of the
# workspace on ../shared/data. Tests that need the data skip when it is absent unless
# EDGEOPT_REQUIRE_DATA=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-oracles.sh
export EDGEOPT_PYTHON="$PWD/.venv/bin/python"
export EDGEOPT_DATA="${EDGEOPT_DATA:-../shared/data}"
cargo test --workspace --release --no-fail-fast
