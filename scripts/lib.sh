# Shared by scripts/demo and scripts/test: install what is missing, find the build, and run
# the local emulator. Sourced, not run.

# Cargo's target directory lives outside the checkout unless the caller chose one, so that
# fresh clones on the same machine (CI's among them) reuse the slow AWS SDK builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
PYTHON="${SHOAL_PYTHON:-python3}"
export SHOAL_PYTHON="$PYTHON"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# moto's server is the local AWS (SQS, SNS, EC2) for the demo and every test.
ensure_moto() {
  if "$PYTHON" -c 'from moto.server import ThreadedMotoServer' 2>/dev/null; then
    return
  fi
  say "installing the AWS emulator: moto[server]"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -r deploy/local/requirements.txt
}

# Starts the emulator on a free loopback port, exports the SDK's standard endpoint and
# dummy credentials, and stops the emulator when the calling script exits.
start_emulator() {
  local dir
  dir="$(mktemp -d)"
  mkfifo "$dir/port"
  "$PYTHON" deploy/local/emulator.py >"$dir/port" &
  EMULATOR_PID=$!
  trap 'kill "$EMULATOR_PID" 2>/dev/null; wait "$EMULATOR_PID" 2>/dev/null; rm -rf "'"$dir"'"' EXIT
  local port
  read -r port <"$dir/port"
  export AWS_ENDPOINT_URL="http://127.0.0.1:${port}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="testing" AWS_SECRET_ACCESS_KEY="testing"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  say "emulator listening on $AWS_ENDPOINT_URL"
}
