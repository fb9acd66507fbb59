#!/usr/bin/env bash
# Entrypoint of the body4d Docker image (Hugging Face Docker Space): prepares the /data folders,
# optionally fetches the checkpoints, then runs its command (the image's CMD: python app.py).
#
#   scripts/space_start.sh COMMAND [ARG...]
#
# Environment (the Dockerfile sets the first three):
#   BODY4D_CKPT_ROOT            checkpoint folder (default /data/checkpoints)
#   BODY4D_OUTPUT_DIR           run folders + Gradio cache (default /data/outputs)
#   HF_HOME                     huggingface_hub cache and token (default /data/.huggingface)
#   BODY4D_FETCH_CHECKPOINTS=1  opt in: when the checkpoint folder is empty or missing and HF_TOKEN is
#                               set, run `python scripts/setup.py --ckpt-root "$BODY4D_CKPT_ROOT"` first
#   BODY4D_FETCH_COMPLETION=1   ... with --with-completion (Diffusion-VAS + Depth Anything V2)
#   HF_TOKEN                    Hugging Face token (a Space secret) with the SAM-3 / SAM-3D-Body
#                               licences accepted; both repositories are gated
#
# The /data volume is mounted at run time and hides whatever the image build put there, so the folders
# are created here. A failed fetch is logged and the command still runs: the app's status panel says
# what is missing and how to get it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SETUP="$HERE/setup.py"

log() {
    printf 'space_start: %s\n' "$*" >&2
}

truthy() {
    case "${1,,}" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

if [[ $# -eq 0 ]]; then
    log "usage: $0 COMMAND [ARG...] (the image runs: $0 python app.py)"
    exit 2
fi

export BODY4D_CKPT_ROOT="${BODY4D_CKPT_ROOT:-/data/checkpoints}"
export BODY4D_OUTPUT_DIR="${BODY4D_OUTPUT_DIR:-/data/outputs}"
export HF_HOME="${HF_HOME:-/data/.huggingface}"

for dir in "$BODY4D_CKPT_ROOT" "$BODY4D_OUTPUT_DIR" "$HF_HOME"; do
    if ! mkdir -p -- "$dir"; then
        log "cannot create $dir (uid $(id -u)): is the persistent storage mounted and writable?"
    fi
done

if truthy "${BODY4D_FETCH_CHECKPOINTS:-0}"; then
    if [[ -d "$BODY4D_CKPT_ROOT" && -n "$(ls -A -- "$BODY4D_CKPT_ROOT" 2>/dev/null)" ]]; then
        log "checkpoints: $BODY4D_CKPT_ROOT is not empty, not fetching" \
            "(to complete it: python $SETUP --ckpt-root $BODY4D_CKPT_ROOT)"
    elif [[ -z "${HF_TOKEN:-}" ]]; then
        log "checkpoints: BODY4D_FETCH_CHECKPOINTS is set but HF_TOKEN is not, not fetching:" \
            "SAM-3 and SAM-3D-Body are gated, accept their licences on huggingface.co and add HF_TOKEN" \
            "as a secret of the Space"
    else
        setup_args=(--ckpt-root "$BODY4D_CKPT_ROOT")
        if truthy "${BODY4D_FETCH_COMPLETION:-0}"; then
            setup_args+=(--with-completion)
        fi
        log "checkpoints: $BODY4D_CKPT_ROOT is empty, fetching: python $SETUP ${setup_args[*]}"
        status=0
        python "$SETUP" "${setup_args[@]}" || status=$?
        if [[ $status -eq 0 ]]; then
            log "checkpoints: setup complete"
        else
            log "checkpoints: SETUP FAILED (exit code $status, its log is above); starting anyway," \
                "the app lists what is missing"
        fi
    fi
fi

exec "$@"
