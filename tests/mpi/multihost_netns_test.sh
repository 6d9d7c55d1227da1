#!/usr/bin/env bash
# A real two-host job on one machine: two network namespaces joined by a veth pair, one rank in
# each, Open MPI over TCP between them (no shared-memory transport). `tritmoe logits` and greedy
# `tritmoe generate` across the two "hosts" must match a plain single process. Exits 77 (ctest:
# skipped) with the reason where namespaces cannot be made (not root, no `ip netns`).
#   multihost_netns_test.sh TRITMOE_BINARY SCRATCH_DIR
set -euo pipefail
tritmoe="$1"
dir="$2"
here="$(cd "$(dirname "$0")" && pwd)"
suffix="$$"
nsa="tmA$suffix" nsb="tmB$suffix" va="tmva$suffix" vb="tmvb$suffix"
va="${va:0:15}" vb="${vb:0:15}"

skip() { echo "SKIPPED: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
ip netns add "$nsa" 2>/dev/null || skip "cannot create network namespaces here"
cleanup() {
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$nsb"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$nsa"
ip link set "$vb" netns "$nsb"
ip netns exec "$nsa" ip addr add 10.231.7.1/24 dev "$va"
ip netns exec "$nsb" ip addr add 10.231.7.2/24 dev "$vb"
for ns in "$nsa" "$nsb"; do ip netns exec "$ns" ip link set lo up; done
ip netns exec "$nsa" ip link set "$va" up
ip netns exec "$nsb" ip link set "$vb" up

mkdir -p "$dir"
# mpirun starts the remote rank's daemon through this "rsh": a command run inside the second
# namespace. Open MPI passes its own options first, then the host, then the command.
agent="$dir/netns-rsh.sh"
cat > "$agent" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift;; *) break;; esac; done
shift
exec ip netns exec $nsb sh -c "\$*"
AGENT
chmod +x "$agent"

model="$dir/tiny.gguf"
"$tritmoe" gen-model --config tiny --recipe ud-1.58 --out "$model" >/dev/null
printf '%s\n' 1 5 9 300 77 12 1000 3 500 42 42 42 7 800 > "$dir/tokens.txt"

two_hosts() {
  OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=10.231.7.0/24 \
    OMPI_MCA_oob_tcp_if_include=10.231.7.0/24 OMPI_MCA_plm_rsh_agent="$agent" \
    timeout 120 ip netns exec "$nsa" "$here/mpirun.sh" -np 2 --host 10.231.7.1:1,10.231.7.2:1 \
    "$@"
}

# Where each rank ran: one per namespace, so the exchange crossed the veth pair.
where=$(two_hosts sh -c 'echo "rank $OMPI_COMM_WORLD_RANK $(ip -4 -o addr show | grep -o "10\.231\.7\.[0-9]*")"' | sort)
echo "$where"
[[ "$where" == *"rank 0 10.231.7.1"* && "$where" == *"rank 1 10.231.7.2"* ]] || {
  echo "FAIL: ranks did not land one per namespace"
  exit 1
}

"$tritmoe" logits --model "$model" --tokens-file "$dir/tokens.txt" --out "$dir/one.bin" >/dev/null
two_hosts "$tritmoe" logits --model "$model" --tokens-file "$dir/tokens.txt" \
  --out "$dir/two.bin" > "$dir/two.log" 2>&1 || { cat "$dir/two.log"; echo "FAIL: 2-host logits"; exit 1; }
python3 - "$dir/one.bin" "$dir/two.bin" <<'PY'
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
assert len(a) == len(b) and len(a) % 4 == 0, f"sizes {len(a)} vs {len(b)}"
x = struct.unpack(f"<{len(a)//4}f", a); y = struct.unpack(f"<{len(b)//4}f", b)
n_vocab = 1024
rows = len(x) // n_vocab
worst = 0.0
for t in range(rows):
    r = slice(t * n_vocab, (t + 1) * n_vocab)
    xa, ya = x[r], y[r]
    assert xa.index(max(xa)) == ya.index(max(ya)), f"argmax differs at position {t}"
    num = sum((p - q) ** 2 for p, q in zip(xa, ya)) ** 0.5
    den = sum(q * q for q in xa) ** 0.5
    worst = max(worst, num / den)
print(f"2 hosts vs 1 process: {rows} positions, argmax equal, worst row relative error {worst:.2e}")
assert worst <= 1e-4, "logits differ by more than 1e-4"
PY

gen=(generate --model "$model" --prompt "hello world" -n 12 --temperature 0)
"$tritmoe" "${gen[@]}" > "$dir/one.txt" 2>/dev/null
two_hosts "$tritmoe" "${gen[@]}" > "$dir/two.txt" 2>"$dir/two-gen.log" || {
  cat "$dir/two-gen.log"; echo "FAIL: 2-host generate"; exit 1; }
cmp "$dir/one.txt" "$dir/two.txt" || { echo "FAIL: greedy text differs"; exit 1; }
echo "PASS: greedy text identical: $(head -c 80 "$dir/one.txt")"
