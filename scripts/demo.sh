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
MORE=${DEMO_MORE:-300}     # extra composites of the training faces (a from-scratch CNN needs variety)
FACTOR=${DEMO_FACTOR:-3}
# The dense detector (the default head): a small MobileNetV2 at 96 px. ImageNet weights are tried
# first (step 7, a bounded attempt); without them it trains from scratch, one phase, everything.
COMMON=(--backbone mobilenetv2 --alpha 0.35 --image-size 96 --batch-size 32 --lr 3e-3 --seed 0)
SCRATCH=(--weights none --fine-tune-layers all --epochs "${DEMO_EPOCHS:-20}" --patience 20)
IMAGENET=(--weights imagenet --epochs 10 --fine-tune-epochs 10 --patience 10)
if [ "${DEMO_SMALL:-0}" = 1 ]; then
    MORE=20
    FACTOR=1
    SCRATCH=(--weights none --fine-tune-layers all --epochs 1)
fi
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT/report"

step "1. Capture: a video file stands in for the webcam (a frame every 0.5 s of media time)"
python scripts/make_sample.py --video "$OUT/webcam.avi"
datatool capture "$OUT/me" --source "$OUT/webcam.avi" --interval 0.5 --count 0 --no-preview

step "2. Pre-label the captured frames with OpenCV's Haar cascade (you would correct them in labelme)"
datatool prelabel "$OUT/me" --detector haar

step "3. Bring in the bundled WIDER FACE sample (plus $MORE more composites of its training faces) and merge"
datatool convert "$SAMPLE/wider/wider_face_sample_bbx_gt.txt" --from wider \
    --images "$SAMPLE/wider/images" --out "$OUT/wider"
python scripts/make_sample.py --wider "$MORE" --out "$OUT/more-wider"
datatool convert "$OUT/more-wider/wider_face_more_bbx_gt.txt" --from wider \
    --images "$OUT/more-wider/images" --out "$OUT/more"
datatool merge "$OUT/me" "$OUT/wider" "$OUT/more" --out "$OUT/dataset"

step "4. Validate (every problem listed; exit 1 on errors)"
datatool validate "$OUT/dataset" --labels face --json "$OUT/report/validate.json"
datatool preview "$OUT/dataset" --grid "$OUT/report/dataset.png" --n 16

step "5. Augment x$FACTOR with the default recipe (reproducible: same seed, same bytes)"
datatool augment "$OUT/dataset" --out "$OUT/augmented" --factor "$FACTOR" --recipe default --seed 0
datatool preview "$OUT/augmented" --grid "$OUT/report/augmented.png" --n 16 --seed 1

step "6. Split into TFRecords: a capture session and every variant of an image stay in one split"
datatool split "$OUT/augmented" --out "$OUT/tfrecords" --group-by session --seed 0
datatool inspect "$OUT/tfrecords" --grid "$OUT/report/tfrecords.png" --n 16

step "6b. Dataset health: rank suspicious labels against a detector, then one HTML report"
datatool audit "$OUT/dataset" --detector haar --json "$OUT/report/audit.json" --grid "$OUT/report/suspects.jpg"
datatool report "$OUT/dataset" --tfdir "$OUT/tfrecords" --audit "$OUT/report/audit.json" \
    --validation "$OUT/report/validate.json" --out "$OUT/report/health.html"

step "7. Train the dense face detector (a score and a box per feature-map cell, then NMS)"
# ImageNet weights need one download (Keras caches it): try for a few seconds, never hang.
if [ "${DEMO_SMALL:-0}" = 1 ]; then
    WHY="not tried in the small demo (DEMO_SMALL=1)"
elif WHY=$(timeout 40 python scripts/try_imagenet.py --image-size 96 --alpha 0.35); then
    WHY=""
else
    WHY=${WHY:-"no answer within 40 s"}
fi
if [ -z "$WHY" ]; then
    echo "ImageNet weights available: transfer learning (frozen backbone, then fine-tuning)"
    FIT=("${COMMON[@]}" "${IMAGENET[@]}")
else
    echo "ImageNet weights could not be had ($WHY): training from scratch"
    echo "$WHY" > "$OUT/report/imagenet_unavailable.txt"
    FIT=("${COMMON[@]}" "${SCRATCH[@]}")
fi
trainer fit "$OUT/tfrecords" --out "$OUT/run" "${FIT[@]}"

step "8. Evaluate on the test split, and on held-out photos whose faces were never seen"
trainer evaluate "$OUT/run" "$OUT/tfrecords" --split test --out "$OUT/report/test"
datatool split "$SAMPLE/heldout" --out "$OUT/heldout-tf" --ratios 0,0,1
trainer evaluate "$OUT/run" "$OUT/heldout-tf" --split test --out "$OUT/report/heldout"

step "9. Predict on the held-out photos (annotated copies + CSV/JSON)"
trainer predict "$OUT/run" "$SAMPLE/heldout/images" --out "$OUT/predictions"

step "10. Report"
python scripts/demo_report.py "$OUT"

step "Done"
echo "Open $OUT/report/report.html (or report.md): the numbers and pictures of this run."
echo "The trained model is $OUT/run/model.keras; try: trainer predict $OUT/run your_photo.jpg"
