#!/usr/bin/env bash
# The main job, end to end, on the bundled sample data (datasets/sample): no webcam, no GPU,
# no internet. Run through `make demo` (which puts the project's .venv on PATH).
# Everything it makes goes to demo_out/ (recreated on every run; nothing else is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2 QT_QPA_PLATFORM=offscreen

OUT=${DEMO_OUT:-demo_out}
SAMPLE=datasets/sample
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT"

step "1. Convert the bundled WIDER FACE sample to a labelme dataset"
datatool convert "$SAMPLE/wider/wider_face_sample_bbx_gt.txt" --from wider \
    --images "$SAMPLE/wider/images" --out "$OUT/wider"

step "2. Validate it (every problem listed; exit 1 on errors)"
datatool validate "$OUT/wider" --labels face --json "$OUT/validate.json"

step "Done"
echo "Results are in $OUT/: the labelme dataset $OUT/wider (open it with 'datatool label $OUT/wider')"
echo "and the validation report $OUT/validate.json."
