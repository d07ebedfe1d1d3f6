#!/usr/bin/env bash
# Makes the nerfstudio import fixtures in tests/data/nerfstudio/ (committed; tests never run nerfstudio).
#
#   tools/recipes/nerfstudio_fixture.sh [WORK]      (WORK: scratch folder, default /tmp/nsfix)
#
# 1. a 48x48 duck dataset (20 train + 4 test views) with `latentscape dataset blender`;
# 2. nerfacto (nerfstudio 1.1.5, NS_VENV from ../shared/tools/nerfacto_baseline.sh, CPU, offline)
#    with reduced sizes so the checkpoint stays small (tools/recipes/nerfstudio_fixture_ns.py train:
#    8 levels x 2^12 main grid, 2 proposal nets of 4 levels x 2^11, 64/32/24 samples per ray,
#    appearance embedding 8, white background), STEPS steps of RAYS rays, implementation torch;
# 3. a camera path of the 4 test views in nerfstudio's dataparser space, at 40x40;
# 4. ns-render camera-path of it (PNG frames, plus the float32 frames as .npy);
# 5. copies run/config.yml (verbatim: its scratch paths are never read), dataparser_transforms.json, the dataset's
#    transforms.json (as dataset_transforms.json),
#    nerfstudio_models/step-*.ckpt, camera_path.json and the frames into tests/data/nerfstudio/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/nsfix}; STEPS=${STEPS:-100}; RAYS=${RAYS:-512}; SIZE=${SIZE:-40}
NS_VENV=${NS_VENV:-/tmp/ns-venv}
NSPY="$NS_VENV/bin/python $HERE/tools/recipes/nerfstudio_fixture_ns.py"
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
mkdir -p "$WORK"
[ -f "$WORK/data/transforms.json" ] || latentscape dataset blender --mesh /usr/share/assimp/models/Collada/duck.dae \
  --out "$WORK/data" --size 48 --train 20 --val 0 --test 4 --samples 16
RUN="$WORK/torch/runs/fixture/nerfacto/run"
[ -f "$RUN/config.yml" ] || $NSPY train "$WORK/data" "$WORK/torch" "$STEPS" torch "$RAYS" > "$WORK/train_torch.log" 2>&1
$NSPY campath "$WORK/data" "$RUN" "$WORK/camera_path.json" "$SIZE"
rm -rf "$WORK/frames"
$NSPY render "$RUN/config.yml" "$WORK/camera_path.json" "$WORK/frames" > "$WORK/render.log" 2>&1
DST="$HERE/tests/data/nerfstudio/nerfacto_torch"
rm -rf "$DST"; mkdir -p "$DST/run/nerfstudio_models" "$DST/ns_render"
cp "$RUN/config.yml" "$DST/run/"
cp "$RUN/dataparser_transforms.json" "$DST/run/"
cp "$RUN"/nerfstudio_models/step-*.ckpt "$DST/run/nerfstudio_models/"
cp "$WORK/camera_path.json" "$DST/"
cp "$WORK/data/transforms.json" "$DST/dataset_transforms.json"   # the dataset's poses (no images), for the transform test
cp "$WORK"/frames/*.png "$WORK"/frames/*.npy "$DST/ns_render/"
du -sh "$DST"
