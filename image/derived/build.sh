#!/usr/bin/env bash
# A team's model image derived from shardscore's (image/derived/Dockerfile):
#   bash image/derived/build.sh IMAGE_REF PACKAGE...
# Each PACKAGE is a folder with a pyproject.toml or setup.py (built into a wheel here), a wheel, or a requirement
# from the package index (`mlflow-skinny`, `scikit-learn==1.7.2`: the library a shipped loader needs); what the packages
# need is fetched as wheels too, held to shardscore's pins (requirements.lock): nothing is built in the image (it
# has no compiler and no `wheel`), and nothing shardscore pins is replaced. Environment:
#   SHARDSCORE_IMAGE  the image to derive from (default shardscore:<version from job/pyproject.toml>)
#   PYTHON            the Python that builds the wheels (default python3; the image's is 3.11)
#   PIP_WHEEL_ARGS    more `pip wheel` arguments (an index of your own: --index-url ...)
# Progress goes to stderr; the only line on stdout is IMAGE_REF.
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 IMAGE_REF PACKAGE_DIR_WHEEL_OR_REQUIREMENT..." >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ref="$1"; shift
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/job/pyproject.toml")"
base="${SHARDSCORE_IMAGE:-shardscore:$version}"
docker image inspect "$base" >/dev/null 2>&1 || { echo "$0: no image $base here (make image builds it)" >&2; exit 2; }
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/wheels/own" "$ctx/wheels/deps"
reqs=()
pip_wheel() { "${PYTHON:-python3}" -m pip wheel -q ${PIP_WHEEL_ARGS:-} "$@" >&2; }
for source in "$@"; do
  if [[ "$source" == *.whl && -f "$source" ]]; then
    cp "$source" "$ctx/wheels/own/"
  elif [[ -f "$source/pyproject.toml" || -f "$source/setup.py" ]]; then
    pip_wheel --no-deps --wheel-dir "$ctx/wheels/own" "$source"
  elif [[ "$source" != */* && "$source" != *.whl ]]; then
    reqs+=("$source")  # a requirement from the package index: mlflow-skinny, scikit-learn==1.7.2
  else
    echo "$0: $source: neither a wheel, a folder with a pyproject.toml or setup.py, nor a requirement" >&2; exit 2
  fi
done
# Constraints may not name extras (ray[default]): the pins without them.
sed 's/\[[^]]*\]//' "$root/requirements.lock" >"$ctx/constraints.txt"
# The requirements as given go to the image too: a wheel alone loses their extras (pyiceberg[sql-postgres]).
printf '%s\n' "${reqs[@]}" >"$ctx/wheels/requirements.txt"
if ((${#reqs[@]})); then
  pip_wheel --no-deps --constraint "$ctx/constraints.txt" --wheel-dir "$ctx/wheels/own" "${reqs[@]}"
fi
pip_wheel --constraint "$ctx/constraints.txt" --wheel-dir "$ctx/wheels/deps" "$ctx"/wheels/own/*.whl ${reqs[@]+"${reqs[@]}"}
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build -q --build-arg "SHARDSCORE_IMAGE=$base" -t "$ref" "$ctx" >&2
echo "$ref"
