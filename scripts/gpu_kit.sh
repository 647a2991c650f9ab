#!/usr/bin/env bash
# A lent GPU machine for training: what to bring, and how to bring the results back.
#
#   bash scripts/gpu_kit.sh prepare [DATA]     # here, before the lease (DATA: ../shared/data)
#   bash scripts/gpu_kit.sh train ARGS...      # there: scripts/train_within.py ARGS, then pack
#
# The device machine reaches no network, and its Python (3.12, with torch, numpy, scipy,
# scikit-image, tifffile and safetensors) lacks zarr and dask.  `prepare` fills the ignored
# folder .gpukit/ (about 40 MB) with the training and benchmark pictures the recipes read and
# the wheels of the missing packages, at the versions installed here; carry it with the call:
#
#   run(carry=[".gpukit"], command="bash scripts/gpu_kit.sh train --minutes 23.5 --threads 3 \
#       --job recipes/denoise_csattn_wide.json --job recipes/demosaic_grl_deep.json")
#
# `train` installs the wheels, runs train_within.py with --data .gpukit/data and the jobs
# given, and packs the weights, their cards and the logs into $OUT/results.tar (what comes
# back from $OUT is at most 8 files).  Unpack it here and copy the weights and cards that
# improved into napari_attnrestore/weights/ (or rescore them on a CPU first).
set -euo pipefail
kit=.gpukit

prepare() {
    local data=${1:-../shared/data}
    [[ -d $data/train && -d $data/bench ]] || { echo "gpu_kit: no train/ and bench/ under $data" >&2; exit 2; }
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)  # ignored here, so only a carry takes it along
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$kit/" "$exclude" 2>/dev/null || echo "/$kit/" >> "$exclude"
    rm -rf "$kit" && mkdir -p "$kit/data" "$kit/wheels"
    cp -r "$data/train" "$data/bench" "$kit/data/"
    local pins
    pins=$(python -m pip freeze | grep -i -E '^(zarr|numcodecs|donfig|google-crc32c|dask|partd|locket)==' || true)
    [[ $(wc -l <<< "$pins") -eq 7 ]] || { echo "gpu_kit: zarr, dask and their parts are not all installed here" >&2; exit 2; }
    # shellcheck disable=SC2086
    python -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
        --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
        -d "$kit/wheels" $pins
    du -sh "$kit"
}

train() {
    [[ -d $kit/wheels && -d $kit/data ]] || { echo "gpu_kit: no $kit: run 'gpu_kit.sh prepare' here and carry it" >&2; exit 2; }
    [[ -n ${OUT:-} ]] || { echo "gpu_kit: OUT (the folder that comes back) is not set" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps "$kit"/wheels/*.whl
    local work
    work=$(mktemp -d)
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    local rc=0
    python3 scripts/train_within.py --data "$kit/data" --out "$work/out" --workdir "$work/runs" "$@" || rc=$?
    # weights and cards, each run's loss curve, segments and log; states stay behind (--continue
    # from the returned weight resumes with fresh optimizer moments)
    mkdir -p "$work/out" "$work/runs"  # (train_within.py may have failed before making them)
    (cd "$work" && find out runs -type f \( -name '*.safetensors' -o -name '*.json' -o -name '*.tsv' \
        -o -name '*.log' -o -name DONE \) -print0 | tar --null -cf "$OUT/results.tar" -T -)
    tar -tvf "$OUT/results.tar"
    return $rc
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    train) shift; train "$@" ;;
    *) sed -n '2,5p' "$0" >&2; exit 2 ;;
esac
