#!/usr/bin/env bash
# Fine-tune the pretrained model on a GPU machine from a packed corpus, in one self-contained call.
#
#   python pack_corpus.py ../shared/data/real --include speech noise esc10 --out runs/pack   # here, once
#   PACK=runs/pack MINUTES=8 OUT=runs/gpu bash gpu_train.sh                                   # there
#   PACK=runs/pack MINUTES=1 OUT=runs/smoke bash gpu_train.sh                                 # the CPU smoke run
#
# Wheels in .whl/ (soundfile, soxr, cffi, pycparser for the GPU machine's Python) are installed first
# when those packages are missing there and no package index can be reached. The pack is prepared with
# every core (prepare_data.py), then train.py runs for MINUTES from models/unet.pt with the batches mixed
# in the device's memory, writing its best and last checkpoints to OUT at each validation, so a run cut
# short still leaves weights; each checkpoint records where and how long it trained (ckpt["compute"]).
# Extra arguments go to train.py (e.g. --batch-size 64 --residual-weight 0.1).
set -euo pipefail
PACK=${PACK:-runs/pack} MINUTES=${MINUTES:-8} OUT=${OUT:-runs/gpu} PY=${PYTHON:-python3}
if ! "$PY" -c "import soundfile, soxr" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PREP=$(mktemp -d)/prepared
"$PY" prepare_data.py --speech-dir "$PACK/speech" --noise-dir "$PACK/noise" "$PACK/esc10" \
    --speech-labels "$PACK/speech_labels.csv" --mixes-per-clip 4 --out "$PREP" --workers "$(nproc)"
"$PY" train.py --data-dir "$PREP" --out "$OUT/unet.pt" --init-from models/unet.pt --time-budget "$MINUTES" \
    --evals 6 --mixing auto --lr 0.001 --warmup-epochs 0.2 --epochs 2 --segment-seconds 2 --seed 10 \
    --noise-weights noise=10 --noise-mix-prob 0.5 --speed-prob 0.5 --sisdr-weight 0.03 "$@"
