# Shared by scripts/demo and scripts/test: install what is missing, find the build, and run
# the local emulator. Sourced, not run.

# Cargo's target directory lives outside the checkout unless the caller chose one, so that
# fresh clones on the same machine (CI's among them) reuse the slow AWS SDK builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
PYTHON="${SHOAL_PYTHON:-python3}"
export SHOAL_PYTHON="$PYTHON"

# Background processes to stop when the calling script exits, however it exits.
BACKGROUND_PIDS=()
cleanup() {
  if [ "${#BACKGROUND_PIDS[@]}" -gt 0 ]; then
    kill "${BACKGROUND_PIDS[@]}" 2>/dev/null || true
    wait "${BACKGROUND_PIDS[@]}" 2>/dev/null || true
  fi
  [ -z "${SCRATCH_DIR:-}" ] || rm -rf "$SCRATCH_DIR"
}
trap cleanup EXIT

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# moto's server is the local AWS (SQS, SNS, EC2) for the demo and every test.
ensure_moto() {
  if "$PYTHON" -c 'from moto.server import ThreadedMotoServer' 2>/dev/null; then
    return
  fi
  say "installing the AWS emulator: moto[server]"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -r deploy/local/requirements.txt
}

# fauxqs (npm) is the fast SQS/SNS emulator for load-shaped tests and the benchmark. It is
# installed under the cache and patched to listen on loopback only (fauxqs@1 binds every
# interface).
FAUXQS_VERSION="1.9.2"
export SHOAL_FAUXQS_DIR="${SHOAL_FAUXQS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/fauxqs-$FAUXQS_VERSION}"
ensure_fauxqs() {
  local app="$SHOAL_FAUXQS_DIR/node_modules/fauxqs/dist/app.js"
  if [ ! -f "$app" ]; then
    say "installing the fast SQS/SNS emulator: fauxqs@$FAUXQS_VERSION"
    mkdir -p "$SHOAL_FAUXQS_DIR"
    npm install --prefix "$SHOAL_FAUXQS_DIR" --no-audit --no-fund --silent "fauxqs@$FAUXQS_VERSION" >&2
  fi
  sed -i 's/host: "0\.0\.0\.0"/host: "127.0.0.1"/' "$app"
}

# Starts the emulator on a free loopback port, exports the SDK's standard endpoint and
# dummy credentials, and stops the emulator when the calling script exits.
start_emulator() {
  SCRATCH_DIR="${SCRATCH_DIR:-$(mktemp -d)}"
  mkfifo "$SCRATCH_DIR/port"
  "$PYTHON" deploy/local/emulator.py >"$SCRATCH_DIR/port" &
  BACKGROUND_PIDS+=($!)
  local port
  read -r port <"$SCRATCH_DIR/port"
  export AWS_ENDPOINT_URL="http://127.0.0.1:${port}"
  export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="testing" AWS_SECRET_ACCESS_KEY="testing"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  say "emulator listening on $AWS_ENDPOINT_URL"
}
