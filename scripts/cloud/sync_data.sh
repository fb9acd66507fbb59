#!/usr/bin/env bash
# Push input videos to a remote body4d machine (a Hugging Face Space in Dev Mode, or any ssh host) and
# pull its run folders home, with rsync over ssh. Never deletes anything; see usage() or --help.
# Portable to bash 3.2 (macOS): no mapfile, no ${x,,}, empty arrays expanded with ${a[@]+"${a[@]}"}.
set -uo pipefail

PROG="${0##*/}"
RUN_ID_RE='^[0123456789]{8}_[0123456789]{6}_[0123456789]{3}_[0123456789abcdef]{8}$'
RUN_ID_EXAMPLE=20261203_144628_123_1a2b3c4d
PARTIAL_DIR=.rsync-partial

usage() {
  cat <<EOF
Usage: scripts/cloud/$PROG up   [options] [FILE|DIR ...]
       scripts/cloud/$PROG down [options] [RUN_ID ...]

Copy input videos to a remote body4d machine (a Hugging Face Space in Dev Mode, or any ssh host)
and bring its run folders home, with rsync over ssh.

  up     local inputs -> remote inputs folder: the FILEs and DIRs named (DIR/ with a trailing
         slash sends its contents), or everything in the local inputs folder when none is named.
  down   remote run folders -> local outputs folder: all runs, or only the RUN_IDs named
         (run ids look like $RUN_ID_EXAMPLE). Run temporaries (.scratch/) are skipped.

Nothing is ever deleted, on either side; a file of the same name is updated. An interrupted
transfer resumes when the same command is run again (partial files wait in $PARTIAL_DIR/).

Options (a flag wins over its environment variable, in brackets):
  --host HOST           ssh host or ~/.ssh/config alias, e.g. <space-subdomain>@ssh.hf.space
                        [BODY4D_SSH_HOST]; empty or "local": copy between local folders
  --port PORT           ssh port [BODY4D_SSH_PORT] (default: ssh's, 22 unless the config says)
  --ssh-config FILE     ssh config file, passed to ssh -F [BODY4D_SSH_CONFIG]; ssh reads ~/.ssh
                        of the passwd home directory (not \$HOME) and skips it when this is given
  --remote-inputs DIR   [BODY4D_REMOTE_INPUTS]  (default /data/inputs)
  --remote-outputs DIR  [BODY4D_REMOTE_OUTPUTS] (default /data/outputs)
  --local-inputs DIR    what "up" sends when no FILE is named [BODY4D_LOCAL_INPUTS]
                        (default <repo>/inputs)
  --local-outputs DIR   [BODY4D_LOCAL_OUTPUTS] (default <repo>/outputs, where the app writes)
  -n, --dry-run         list what would be copied; change nothing
  -h, --help            show this help

The host key is checked (StrictHostKeyChecking=yes) and ssh never prompts (BatchMode=yes): before
the first sync, connect once by hand with "ssh HOST" and confirm the fingerprint. The host needs
rsync installed too.

Examples:
  export BODY4D_SSH_HOST=<space-subdomain>@ssh.hf.space
  scripts/cloud/$PROG up ~/videos/street.mp4
  scripts/cloud/$PROG down --dry-run
  scripts/cloud/$PROG down $RUN_ID_EXAMPLE

Exit codes: 0 done; 2 usage error; 127 rsync or ssh missing or too old (here or on the host);
255 ssh could not connect (unknown host key, login refused, ...); otherwise rsync's exit code.
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
err() { printf '%s: error: %s\n' "$PROG" "$*" >&2; }
usage_error() {
  err "$*"
  printf 'Run "%s --help" for the usage.\n' "$0" >&2
  exit 2
}

# A path given to rsync as a local one: a relative path gets "./" so that a ':' in it is not read as
# host:path and a leading '-' not as an option (rsync copies the same thing either way).
local_arg() {
  case "$1" in
    /*) printf '%s' "$1" ;;
    *) printf './%s' "$1" ;;
  esac
}

# One argument quoted for rsync's -e parser (single quotes; a quote inside is doubled).
rsync_quote() {
  local q="'"
  printf "'%s'" "${1//$q/$q$q}"
}

# ---------------------------------------------------------------------------------------------------
# Arguments

self="${BASH_SOURCE[0]}"
self_dir="${self%/*}"
[ "$self_dir" = "$self" ] && self_dir=.
repo="$(CDPATH='' cd -- "$self_dir/../.." && pwd)" || {
  err "cannot find the repository folder from $self"
  exit 2
}

host="${BODY4D_SSH_HOST-}"
port="${BODY4D_SSH_PORT-}"
ssh_config="${BODY4D_SSH_CONFIG-}"
remote_inputs="${BODY4D_REMOTE_INPUTS:-/data/inputs}"
remote_outputs="${BODY4D_REMOTE_OUTPUTS:-/data/outputs}"
local_inputs="${BODY4D_LOCAL_INPUTS:-$repo/inputs}"
local_outputs="${BODY4D_LOCAL_OUTPUTS:-$repo/outputs}"
dry_run=0
cmd=""
items=()

set_option() { # name value
  case "$1" in
    --host) host="$2" ;;
    --port) port="$2" ;;
    --ssh-config) ssh_config="$2" ;;
    --remote-inputs) remote_inputs="$2" ;;
    --remote-outputs) remote_outputs="$2" ;;
    --local-inputs) local_inputs="$2" ;;
    --local-outputs) local_outputs="$2" ;;
  esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    -n | --dry-run) dry_run=1 ;;
    --host | --port | --ssh-config | --remote-inputs | --remote-outputs | --local-inputs | --local-outputs)
      [ $# -ge 2 ] || usage_error "option $1 needs a value, e.g. $1 VALUE"
      set_option "$1" "$2"
      shift
      ;;
    --host=* | --port=* | --ssh-config=* | --remote-inputs=* | --remote-outputs=* | --local-inputs=* | --local-outputs=*)
      set_option "${1%%=*}" "${1#*=}"
      ;;
    --)
      shift
      while [ $# -gt 0 ]; do
        if [ -z "$cmd" ]; then cmd="$1"; else items+=("$1"); fi
        shift
      done
      break
      ;;
    -?*) usage_error "unknown option: $1 (the options are listed by --help; there is no delete option)" ;;
    *) if [ -z "$cmd" ]; then cmd="$1"; else items+=("$1"); fi ;;
  esac
  shift
done

case "$cmd" in
  up | down) ;;
  "") usage_error "no command: use \"$PROG up [FILE|DIR ...]\" or \"$PROG down [RUN_ID ...]\"" ;;
  *) usage_error "unknown command: $cmd (use \"up\" to send inputs or \"down\" to fetch run folders)" ;;
esac

[ "$host" = local ] && host=""
if [ -n "$host" ]; then
  case "$host" in
    -*) usage_error "bad host: $host (a host name or ssh config alias cannot start with '-')" ;;
    *:* | */* | *[[:space:]]*)
      usage_error "bad host: $host (give a host name or alias, e.g. <space-subdomain>@ssh.hf.space; the port goes in --port, the folders in --remote-inputs/--remote-outputs)"
      ;;
  esac
  if [ -n "$port" ]; then
    [[ "$port" =~ ^[0123456789]{1,5}$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
      usage_error "bad port: $port (give a number from 1 to 65535 in --port or BODY4D_SSH_PORT)"
  fi
  if [ -n "$ssh_config" ] && [ ! -f "$ssh_config" ]; then
    usage_error "no such ssh config file: $ssh_config (fix --ssh-config or BODY4D_SSH_CONFIG)"
  fi
fi
# The ssh command a user runs by hand to reach the host (shown in messages); "ls" in local mode.
by_hand=""
if [ -n "$host" ]; then
  by_hand="ssh"
  if [ -n "$ssh_config" ]; then
    printf -v quoted '%q' "$ssh_config"
    by_hand="$by_hand -F $quoted"
  fi
  [ -n "$port" ] && by_hand="$by_hand -p $port"
  by_hand="$by_hand $host"
fi
printf -v quoted '%q' "$remote_outputs"
lister="${by_hand:+$by_hand }ls $quoted"
[ -n "$remote_inputs" ] || usage_error "the remote inputs folder is empty: give --remote-inputs DIR"
[ -n "$remote_outputs" ] || usage_error "the remote outputs folder is empty: give --remote-outputs DIR"
[ -n "$local_outputs" ] || usage_error "the local outputs folder is empty: give --local-outputs DIR"

sources=()
if [ "$cmd" = up ]; then
  if [ ${#items[@]} -eq 0 ]; then
    [ -d "$local_inputs" ] ||
      usage_error "no FILE named and the local inputs folder $local_inputs does not exist: name the files or folders to send, or create it (or give --local-inputs DIR)"
    folder="${local_inputs%/}"
    sources=("$(local_arg "${folder:-/}")/")
  else
    for item in "${items[@]}"; do
      [ -e "$item" ] || [ -L "$item" ] ||
        usage_error "no such file or folder: $item (name existing files or folders to send)"
      sources+=("$(local_arg "$item")")
    done
  fi
else
  for item in ${items[@]+"${items[@]}"}; do
    run="$item"
    while [ "${run%/}" != "$run" ]; do run="${run%/}"; done
    [[ "$run" =~ $RUN_ID_RE ]] ||
      usage_error "not a run id: '$item' (run ids look like $RUN_ID_EXAMPLE; list the runs with: $lister)"
    sources+=("$run")
  done
fi

# ---------------------------------------------------------------------------------------------------
# Tools

if ! command -v rsync >/dev/null 2>&1; then
  err "rsync is not installed: install it (Debian/Ubuntu: apt-get install rsync; macOS: brew install rsync)"
  exit 127
fi
# The whole --version text: macOS's openrsync says "rsync version 2.6.9 compatible" on its second line.
rsync_version="$(rsync --version 2>/dev/null)"
if [[ "$rsync_version" =~ rsync\ +version\ +([0123456789]+)\.([0123456789]+)(\.[0123456789]+)? ]]; then
  if [ "${BASH_REMATCH[1]}" -lt 3 ] || { [ "${BASH_REMATCH[1]}" -eq 3 ] && [ "${BASH_REMATCH[2]}" -lt 1 ]; }; then
    err "rsync is too old (version ${BASH_REMATCH[1]}.${BASH_REMATCH[2]}${BASH_REMATCH[3]}; 3.1 or newer is needed): install a newer one (macOS: brew install rsync)"
    exit 127
  fi
fi

opts=(--archive --human-readable --verbose "--partial-dir=$PARTIAL_DIR")
if [ "$dry_run" = 1 ]; then
  opts+=(--dry-run)
elif [ -t 1 ]; then
  opts+=(--info=progress2) # one overall progress line; without a terminal: one line per file
fi
[ "$cmd" = down ] && opts+=(--exclude=.scratch/)

if [ -n "$host" ]; then
  if ! command -v ssh >/dev/null 2>&1; then
    err "ssh is not installed: install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)"
    exit 127
  fi
  ssh_cmd=(ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=30)
  [ -n "$ssh_config" ] && ssh_cmd+=(-F "$ssh_config")
  [ -n "$port" ] && ssh_cmd+=(-p "$port")

  # Preflight: one ssh connection of our own, so that its failure is told apart from rsync's.
  # With StrictHostKeyChecking=yes + BatchMode=yes, an unknown key makes ssh exit 255 with
  # "No ... host key is known for ..." / "Host key verification failed."; a changed key with
  # "REMOTE HOST IDENTIFICATION HAS CHANGED". The remote command checks that rsync is there.
  ssh_rc=0
  ssh_err="$("${ssh_cmd[@]}" -- "$host" 'command -v rsync' 2>&1 >/dev/null)" || ssh_rc=$?
  ssh_err="${ssh_err//$'\r'/}"
  if [ "$ssh_rc" -eq 255 ]; then
    [ -n "$ssh_err" ] && printf '%s\n' "$ssh_err" >&2
    case "$ssh_err" in
      *"IDENTIFICATION HAS CHANGED"* | *"has changed and you have requested strict checking"*)
        err "the host key of $host has CHANGED since it was saved in known_hosts: this may be an attack, or the host was rebuilt. Check the new fingerprint with whoever runs the host; only if it is right, remove the old key (ssh-keygen -R <host name>) and connect once with: $by_hand"
        ;;
      *"Host key verification failed"* | *"host key is known for"*)
        err "the host key of $host is not known (this script never accepts an unknown key): connect once with \"$by_hand\", check the fingerprint it shows against one you trust and confirm it with yes (or add the host's public key to your known_hosts file), then run this again"
        ;;
      *"Permission denied"*)
        err "$host refused the login: check the user name and that your public key is authorized there (for a Hugging Face Space: your key in your account's SSH keys settings, and Dev Mode on); try: $by_hand"
        ;;
      *)
        err "cannot connect to $host with ssh (see its message above): check the host, port and network; try: $by_hand"
        ;;
    esac
    exit 255
  elif [ "$ssh_rc" -ne 0 ]; then
    [ -n "$ssh_err" ] && printf '%s\n' "$ssh_err" >&2
    err "rsync is not installed on $host: install it there (e.g. add rsync to the apt-get packages of the Space's Dockerfile)"
    exit 127
  fi

  rsh=""
  for word in "${ssh_cmd[@]}"; do rsh="$rsh${rsh:+ }$(rsync_quote "$word")"; done
  opts+=(--compress "--rsh=$rsh")
  remote_prefix="$host:"
  where="$host"
else
  remote_prefix=""
  where="this machine"
fi

# A folder on the remote side, as rsync is given it.
remote_path() {
  if [ -n "$host" ]; then printf '%s%s' "$remote_prefix" "$1"; else local_arg "$1"; fi
}

# ---------------------------------------------------------------------------------------------------
# Transfer

if [ "$cmd" = up ]; then
  dest="$(remote_path "${remote_inputs%/}")/"
  args=("${sources[@]}" "$dest")
  what="${#sources[@]} item(s) -> $remote_inputs on $where"
  [ ${#items[@]} -eq 0 ] && what="the contents of $local_inputs -> $remote_inputs on $where"
else
  base="${remote_outputs%/}"
  args=()
  if [ ${#sources[@]} -eq 0 ]; then
    args=("$(remote_path "$base")/")
    what="all runs in $remote_outputs on $where -> $local_outputs"
  else
    for run in "${sources[@]}"; do args+=("$(remote_path "$base/$run")"); done
    what="run(s) ${sources[*]} from $remote_outputs on $where -> $local_outputs"
  fi
  if [ "$dry_run" = 0 ] && ! mkdir -p -- "$local_outputs"; then
    err "cannot create the local outputs folder $local_outputs: give a writable --local-outputs DIR"
    exit 2
  fi
  args+=("$(local_arg "${local_outputs%/}")/")
fi

if [ "$dry_run" = 1 ]; then
  say "$cmd (dry run: lists what would be copied, changes nothing): $what"
else
  say "$cmd: $what"
fi

rc=0
rsync "${opts[@]}" -- "${args[@]}" || rc=$?
case "$rc" in
  0) ;;
  23 | 24)
    err "some files were not copied (rsync exit code $rc, see its messages above)"
    if [ "$cmd" = down ] && [ ${#sources[@]} -gt 0 ]; then
      printf '%s: check that the runs exist: %s\n' "$PROG" "$lister" >&2
    fi
    ;;
  *) err "rsync failed with exit code $rc (see its messages above); run the same command again to resume" ;;
esac
exit "$rc"
