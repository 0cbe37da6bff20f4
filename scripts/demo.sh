#!/usr/bin/env bash
# The main job, end to end, on the bundled sample data (datasets/sample): no webcam, no GPU,
# no internet. Run through `make demo` (which puts the project's .venv on PATH).
# Everything it makes goes to demo_out/ (recreated on every run; nothing else is touched).
# DEMO_SMALL=1 runs a tiny version (fewer variants, one epoch) - what the test suite runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2 QT_QPA_PLATFORM=offscreen

OUT=${DEMO_OUT:-demo_out}
SAMPLE=datasets/sample
FACTOR=8
if [ "${DEMO_SMALL:-0}" = 1 ]; then FACTOR=1; fi
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT/report"

step "1. Capture: a video file stands in for the webcam (a frame every 0.5 s of media time)"
python scripts/make_sample.py --video "$OUT/webcam.avi"
datatool capture "$OUT/me" --source "$OUT/webcam.avi" --interval 0.5 --count 0 --no-preview

step "2. Pre-label the captured frames with OpenCV's Haar cascade (you would correct them in labelme)"
datatool prelabel "$OUT/me" --detector haar

step "3. Bring in the bundled WIDER FACE sample and merge it with the capture"
datatool convert "$SAMPLE/wider/wider_face_sample_bbx_gt.txt" --from wider \
    --images "$SAMPLE/wider/images" --out "$OUT/wider"
datatool merge "$OUT/me" "$OUT/wider" --out "$OUT/dataset"

step "4. Validate (every problem listed; exit 1 on errors)"
datatool validate "$OUT/dataset" --labels face --json "$OUT/report/validate.json"
datatool preview "$OUT/dataset" --grid "$OUT/report/dataset.png" --n 16

step "5. Augment x$FACTOR with the default recipe (reproducible: same seed, same bytes)"
datatool augment "$OUT/dataset" --out "$OUT/augmented" --factor "$FACTOR" --recipe default --seed 0
datatool preview "$OUT/augmented" --grid "$OUT/report/augmented.png" --n 16 --seed 1

step "6. Split into TFRecords: a capture session and every variant of an image stay in one split"
datatool split "$OUT/augmented" --out "$OUT/tfrecords" --group-by session --seed 0
datatool inspect "$OUT/tfrecords" --grid "$OUT/report/tfrecords.png" --n 16

step "Done"
echo "Results are in $OUT/ (report pictures in $OUT/report/)."
