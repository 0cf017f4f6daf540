# The preamble the load scripts share: source it after `set -euo pipefail`. It moves to the
# repository's root, checks for oha, builds the release binaries, and makes `$work`, a scratch
# directory removed (with every background job killed) when the script exits.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v oha >/dev/null || { echo "install oha first: cargo install oha --locked" >&2; exit 2; }
cargo build --release --bins --quiet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# start_gateway UPSTREAM GATEWAY [on|off]: the 100-rule policy's gateway (ledger on or off) on
# core 0 in front of the zero-latency fake upstream on core 1, once it is ready; `$gw` is its pid.
start_gateway() {
  python3 bench/gateway_config.py config "$work" "$2" "$1" "${3:-on}"
  taskset -c 1 target/release/fake-upstream "$1" --gap-ms 0 &
  YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/yardmaster.yaml" &
  gw=$!
  for _ in $(seq 100); do curl -fs "http://$2/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
}
