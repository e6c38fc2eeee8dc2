#!/usr/bin/env bash
# The GPU figures of issue 16 in one call of a lent GPU machine: the encoder (fp32, bf16, parity with the
# CPU), the training steps (fp32, bf16: samples/s, share of the bf16 peak, peak memory) and whether the
# loader keeps the GPU fed (bench/feed.py), then torch.compile against eager; each log under $OUT.  At most
# 6 minutes before the compile part, 8.5 with it, inside one call's 10.
#
# That machine has Python 3.12 with PyTorch, NumPy and SciPy but not the store's packages (Zarr, Polars,
# webdataset, ...).  Here, once:   make gpu-site      (packs them into .whl/site-py312.tar.xz, about 40 MB)
# Then the device tool's run:      command "bash bench/gpu.sh", carry [".whl"], timeout_s 600
# On a CPU (to try the script):    DEVICE=cpu SMALL=1 bash bench/gpu.sh
set -u
OUT=${OUT:-bench-out/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -f .whl/site-py312.tar.xz ] && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    mkdir -p /tmp/physiofm-site && tar -xJf .whl/site-py312.tar.xz -C /tmp/physiofm-site || exit 1
    export PYTHONPATH=/tmp/physiofm-site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${SMALL:-}" ]; then  # a quick pass of the same commands (a CPU, 1-layer models)
    ENCODER=(--repeats 2 --shapes 16x12x10x200) STEP=(--steps 2 --layers 1)
    FEED=(--records 300 --layers 1 --steps 3 --rounds 2 --workers 0,2 --batch-size 32)
else
    ENCODER=() STEP=(--steps 20)
    FEED=(--records 6000 --steps 40 --rounds 3 --workers 0,2,4,8 --batch-size 256)
fi

failed=0
part() {  # part NAME SECONDS SCRIPT ARGS...: run one benchmark under a time limit, its log in $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $PY $*"
    timeout "$limit" "$PY" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    cat "$OUT/$name.txt"
    [ "$rc" -eq 0 ] || { echo "== $name: exit code $rc"; failed=1; }
}

{ nvidia-smi 2>/dev/null || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
part encoder 120 bench/encoder.py --device "$DEVICE" --dtype fp32,bf16 "${ENCODER[@]}"
part train_step 90 bench/train_step.py --device "$DEVICE" --dtype fp32,bf16 "${STEP[@]}"
part feed 150 bench/feed.py --device "$DEVICE" --dtype fp32,bf16 "${FEED[@]}"
# last, so that the figures above are in even if compiling runs out of time: torch.compile against eager,
# bf16 (the GPU's training precision), one shape (compiling takes minutes on 2 CPU cores: not in SMALL)
[ -n "${SMALL:-}" ] || part encoder_compile 150 bench/encoder.py --device "$DEVICE" --dtype bf16 --compile --shapes 16x12x10x200
exit "$failed"
