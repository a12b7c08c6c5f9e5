# Shared by the launch scripts: option parsing helpers and the dry-run switch.
# `run CMD...` prints the command (shell-quoted) under --dry-run, otherwise executes it.

DRY_RUN=${DRY_RUN:-0}

# One word of a command as a shell would need it: bare when safe, otherwise in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  if [ "$DRY_RUN" = 1 ]; then
    local first=1 word
    for word in "$@"; do
      [ $first = 1 ] || printf ' '
      quote "$word"
      first=0
    done
    printf '\n'
  else
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

# The jaxbrain command every script starts: python -m jaxbrain.launch --config CONFIG --workdir WORKDIR [extra].
jaxbrain_command() {
  local config=$1 workdir=$2
  shift 2
  DRY_RUN=1 run "${PYTHON:-python}" -m jaxbrain.launch --config "$config" --workdir "$workdir" "$@"
}
