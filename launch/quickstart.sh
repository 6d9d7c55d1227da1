#!/usr/bin/env bash
# The main job on an embedded default: installs dependencies, builds, generates the `tiny`
# deepseek2 model (random weights, ud-1.58 recipe), inspects it and generates a chat reply.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
model=${MODEL:-build/models/tiny-ud-1.58.gguf}
mkdir -p "$(dirname "$model")"
[[ -f $model ]] || ./build/tritmoe gen-model --config tiny --recipe ud-1.58 --out "$model"
./build/tritmoe inspect "$model" | head -n 40
./build/tritmoe generate --model "$model" --chat --prompt "Why is the sky blue?" -n 32 \
  --temperature 0.6 --min-p 0.05 --seed 42
