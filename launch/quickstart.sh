#!/usr/bin/env bash
# The main job on an embedded default: installs dependencies, builds, generates the `tiny`
# deepseek2 model (random weights, ud-1.58 recipe), serves it on 2 MPI ranks (experts split
# between them), sends one streamed chat request with curl, prints the answer, and stops the
# server. NP=<ranks>, MODEL=<gguf> and PROMPT=<text> override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
bin=${BUILD_DIR:-build}/tritmoe
model=${MODEL:-build/models/tiny-ud-1.58.gguf}
np=${NP:-2}
mkdir -p "$(dirname "$model")"
[[ -f $model ]] || "$bin" gen-model --config tiny --recipe ud-1.58 --out "$model"

run=$(mktemp -d)
log=$run/serve.log
# Free ports are picked by the server and written to ports.json (with rank 0's pid).
tests/mpi/mpirun.sh -np "$np" "$bin" serve --model "$model" --host 127.0.0.1 \
  --port 0 --grpc-port 0 --ports-file "$run/ports.json" >"$log" 2>&1 &
launcher=$!
trap 'kill -TERM $launcher 2>/dev/null || true; rm -rf "$run"' EXIT
for _ in $(seq 600); do
  [[ -f $run/ports.json ]] && break
  kill -0 $launcher 2>/dev/null || { cat "$log"; echo "quickstart: the server did not start"; exit 1; }
  sleep 0.2
done
[[ -f $run/ports.json ]] || { cat "$log"; echo "quickstart: the server did not start in 120 s"; exit 1; }
cat "$log"
field() { sed -E "s/.*\"$1\": ([0-9]+).*/\1/" "$run/ports.json"; }
port=$(field http_port)
pid=$(field pid)

prompt=${PROMPT:-Why is the sky blue?}
echo "quickstart: POST http://127.0.0.1:$port/v1/chat/completions (stream) \"$prompt\""
curl -sN --max-time 120 "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d "{\"model\": \"$(basename "$model" .gguf)\", \"stream\": true,
       \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}],
       \"max_tokens\": 48, \"temperature\": 0.6, \"min_p\": 0.05, \"seed\": 42,
       \"stream_options\": {\"include_usage\": true}}" >"$run/answer.sse"
# The SSE events, as the answer: reasoning (inside <think>) and content, then the usage.
/usr/bin/python3 - "$run/answer.sse" <<'PY'
import json, sys
reasoning, content, usage = "", "", None
for block in open(sys.argv[1]).read().split("\n\n"):
    if not block.startswith("data: ") or block == "data: [DONE]":
        continue
    event = json.loads(block[len("data: "):])
    if "error" in event:
        sys.exit("quickstart: error: " + event["error"]["message"])
    for choice in event.get("choices", []):
        reasoning += choice["delta"].get("reasoning_content") or ""
        content += choice["delta"].get("content") or ""
    usage = event.get("usage") or usage
print("reasoning_content:", repr(reasoning))
print("content:          ", repr(content))
print("usage:            ", json.dumps(usage))
PY

# SIGTERM to rank 0 shuts the whole job down gracefully.
kill -TERM "$pid"
wait $launcher
tail -n 2 "$log"
