#!/usr/bin/env bash
# Pull run folders home from a remote body4d machine (or push inputs to it) with rsync.
#
#   BODY4D_REMOTE=user@host:body4d scripts/cloud/sync_data.sh down [RUN_ID]   # outputs/ -> here
#   BODY4D_REMOTE=user@host:body4d scripts/cloud/sync_data.sh up FILE...      # inputs -> remote inputs/
#
# BODY4D_REMOTE is "<ssh host>:<path of the repository on it>"; extra rsync options go in RSYNC_OPTS.
set -euo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0 ;; esac
: "${BODY4D_REMOTE:?set BODY4D_REMOTE=user@host:path/to/body4d (see --help)}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
opts=(-avh --partial --info=progress2 ${RSYNC_OPTS:-})

case "$1" in
  down)
    run="${2:-}"
    if [ -n "$run" ]; then
      [[ "$run" =~ ^[0-9]{8}_[0-9]{6}_[0-9]{3}_[0-9a-f]{8}$ ]] || { echo "not a run id: $run" >&2; exit 2; }
      rsync "${opts[@]}" "$BODY4D_REMOTE/outputs/$run" "$here/outputs/"
    else
      rsync "${opts[@]}" "$BODY4D_REMOTE/outputs/" "$here/outputs/"
    fi
    ;;
  up)
    shift
    [ $# -ge 1 ] || usage
    rsync "${opts[@]}" "$@" "$BODY4D_REMOTE/inputs/"
    ;;
  *) echo "unknown command $1: use down or up" >&2; exit 2 ;;
esac
