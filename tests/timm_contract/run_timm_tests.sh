#!/usr/bin/env bash
# Run timm's own tests/test_models.py (from the sdist of the installed timm release) on recvision's families.
#
# timm wheels do not ship their tests, so the sdist of the installed version is downloaded once into a cache
# (RECVISION_TIMM_CACHE, default ~/.cache/recvision/timm-tests) and reused offline afterwards. The test file is
# patched to import recvision (which registers the models) and to list our families where timm lists its ViT
# family: in NON_STD_FILTERS (by name) and in FEAT_INTER_FILTERS (by model module). TorchScript and FX tests are
# deselected, by marker and by name (the recurrent ops are not scriptable / traceable by design).
#
# Torch runs one intra-op thread per test process (OMP_NUM_THREADS=1 unless set): the recurrent layers issue many
# small ops, and with a thread pool per op on a shared or busy CPU each op waits on threads the machine cannot give.
# The longest test, test_prune_intermediate_layers_contract (a prune at every block index, each with forwards, a
# backward and deep copies at 224 px; timm keeps it out of its own CI), needs this to stay inside timm's 360 s
# timeout for the pLSTM sizes; vir_large's is compute-bound like timm's own ViT-L. timm enforces the timeout only
# where pytest-timeout is installed; TIMEOUT (timm's variable) changes it.
#
# Usage: tests/timm_contract/run_timm_tests.sh [extra pytest args]   (e.g. -x, --durations=20)
# Environment: RECVISION_TIMM_CACHE (cache folder), PYTHON (interpreter, default python), TIMM_TESTS_K (a -k
# expression AND-ed with the family filter, e.g. "femto or test_vir"; a -k among the pytest args would replace it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python}"
version="$("$python" -c 'import timm; print(timm.__version__)')"
cache="${RECVISION_TIMM_CACHE:-$HOME/.cache/recvision/timm-tests}"
sdist="$cache/timm-$version.tar.gz"
work="$cache/timm-$version"
mkdir -p "$cache"
if [ ! -f "$sdist" ]; then
    "$python" -m pip download --no-binary :all: --no-deps "timm==$version" -d "$cache" --quiet
fi
if [ ! -f "$work/tests/test_models.py" ]; then
    tar -xzf "$sdist" -C "$cache" "timm-$version/tests"
fi
patched="$work/tests/test_models_recvision.py"
"$python" "$root/tests/timm_contract/patch_test_models.py" "$work/tests/test_models.py" "$patched"
filter="(vir or lightnet or plstm) and not torchscript and not _fx"
if [ -n "${TIMM_TESTS_K:-}" ]; then
    filter="($filter) and ($TIMM_TESTS_K)"
fi
cd "$work/tests"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# rootdir here, so that timm's own conftest applies and ours (TRITON_INTERPRET, seeding) does not
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m pytest "$patched" -q -p no:cacheprovider \
    --rootdir "$work/tests" -c /dev/null \
    -k "$filter" \
    -m "not torchscript and not fxforward and not fxbackward" -W ignore::pytest.PytestUnknownMarkWarning \
    "$@"
