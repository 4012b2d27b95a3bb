#!/usr/bin/env bash
# Build the worker image variants locally with docker buildx, tagged with what is inside.
#
#   builder/build.sh [--push] [--dry-run] [--image REPO] [--platform P] [VARIANT ...]
#
#   VARIANT    parakeet (default) | whisper-turbo | both | all
#   --image    repository to tag, e.g. ghcr.io/you/stenopod-worker (default: $STENOPOD_IMAGE or stenopod-worker)
#   --push     push the tags (and a registry build cache) instead of loading into the local docker
#   --platform linux/amd64 by default: RunPod's GPU hosts are x86_64. linux/arm64 builds too (the CUDA base
#              and the torch cu128 wheels exist for it) but is only worth it for Grace-Hopper hosts of your own.
#   --dry-run  print the docker commands instead of running them
#
# Tags, one set per variant, never a floating latest:
#   REPO:<version>-<variant>-cuda12.8      the release (version from pyproject.toml)
#   REPO:<git sha>-<variant>-cuda12.8      the exact commit
set -euo pipefail

cd "$(dirname "$0")/.."

CUDA_TAG="cuda12.8"
IMAGE="${STENOPOD_IMAGE:-stenopod-worker}"
PLATFORM="linux/amd64"
PUSH=0
DRY_RUN=0
VARIANTS=()

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --push) PUSH=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --image) IMAGE="${2:?--image needs a value}"; shift ;;
        --platform) PLATFORM="${2:?--platform needs a value}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) VARIANTS+=("$1") ;;
    esac
    shift
done
[[ ${#VARIANTS[@]} -gt 0 ]] || VARIANTS=(parakeet)
if [[ " ${VARIANTS[*]} " == *" all "* ]]; then
    VARIANTS=(parakeet whisper-turbo both)
fi

models_for() {
    case "$1" in
        parakeet) echo "parakeet-tdt-0.6b-v3" ;;
        whisper-turbo) echo "whisper-large-v3-turbo" ;;
        both) echo "both" ;;
        *) echo "build.sh: unknown variant '$1' (parakeet, whisper-turbo, both, all)" >&2; return 2 ;;
    esac
}

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
[[ -n "$VERSION" ]] || { echo "build.sh: no version in pyproject.toml" >&2; exit 1; }
GIT_SHA="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ "$GIT_SHA" != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    # A sha tag must name exactly that commit's code; a dirty tree gets a marker instead.
    GIT_SHA="${GIT_SHA}-dirty"
fi

run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

for variant in "${VARIANTS[@]}"; do
    models="$(models_for "$variant")"
    args=(docker buildx build
        --platform "$PLATFORM"
        --build-arg "MODELS=$models"
        --build-arg "VERSION=$VERSION"
        --build-arg "GIT_SHA=$GIT_SHA"
        --tag "$IMAGE:$VERSION-$variant-$CUDA_TAG"
        --tag "$IMAGE:$GIT_SHA-$variant-$CUDA_TAG")
    if [[ $PUSH -eq 1 ]]; then
        cache="$IMAGE:buildcache-$variant-$CUDA_TAG"
        args+=(--cache-from "type=registry,ref=$cache" --cache-to "type=registry,ref=$cache,mode=max" --push)
    else
        args+=(--load)
    fi
    run "${args[@]}" .
done
