#!/usr/bin/env bash
# Offline validation of infra/: no AWS credentials, no network.
#
#   infra/validate.sh [BUILD_DIR]
#
# Environment:
#   PYTHON          interpreter with infra/requirements.txt installed (default: python3)
#   ASL_VALIDATOR   asl-validator binary (default: infra/node_modules/.bin/asl-validator, from `npm ci --prefix infra`)
#   BUILD_DIR       where the translated template goes (default: <repo>/target/infra); the first argument wins
#
# Steps:
#   1. cfn-lint the SAM template (cfn-lint applies the SAM transform itself);
#   2. apply the SAM transform offline with aws-sam-translator -> BUILD_DIR/template.json, and cfn-lint that;
#   3. asl-validator --json-path on every statemachines/*.asl.json, and on the same definitions with their
#      DefinitionSubstitutions filled in (BUILD_DIR/statemachines/);
#   4. the least-privilege policy tests (infra/tests, stdlib unittest) on BUILD_DIR/template.json.
set -uo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INFRA_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
ASL_VALIDATOR="${ASL_VALIDATOR:-$INFRA_DIR/node_modules/.bin/asl-validator}"
BUILD_DIR="${1:-${BUILD_DIR:-$REPO_ROOT/target/infra}}"
TEMPLATE="$INFRA_DIR/template.yaml"
TRANSLATED="$BUILD_DIR/template.json"

# Keep every tool away from real AWS configuration: nothing here needs credentials or the network.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
export SAM_CLI_TELEMETRY=0 PYTHONDONTWRITEBYTECODE=1

failures=()
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; failures+=("$*"); }

# cfn-lint through $PYTHON, so that the pinned version in that environment is the one that runs.
cfn_lint() { "$PYTHON" -c 'import sys; from cfnlint.runner import main; sys.argv[0] = "cfn-lint"; sys.exit(main())' "$@"; }

# --- preflight -------------------------------------------------------------------------------------
if ! "$PYTHON" -c 'import cfnlint, samtranslator' 2>/dev/null; then
    echo "infra/validate.sh: $PYTHON lacks cfn-lint or aws-sam-translator." >&2
    echo "  Install them: $PYTHON -m pip install -r $INFRA_DIR/requirements.txt (or set PYTHON to a venv's python)" >&2
    exit 2
fi
if [ ! -x "$ASL_VALIDATOR" ]; then
    echo "infra/validate.sh: asl-validator not found at $ASL_VALIDATOR." >&2
    echo "  Install it: npm ci --prefix $INFRA_DIR (or set ASL_VALIDATOR)" >&2
    exit 2
fi
"$PYTHON" - "$INFRA_DIR/requirements.txt" <<'EOF' || exit 2
import sys
from importlib.metadata import version
pins = dict(line.split("==", 1) for line in open(sys.argv[1]).read().split() if "==" in line)
for name in ("cfn-lint", "aws-sam-translator"):
    have = version(name)
    if have != pins[name]:
        sys.exit(f"infra/validate.sh: {name} {have} is installed but requirements.txt pins {pins[name]}")
    print(f"{name} {have}")
EOF
echo "asl-validator $("$ASL_VALIDATOR" --version)"
mkdir -p "$BUILD_DIR"

# --- 1. cfn-lint on the SAM template ---------------------------------------------------------------
step "cfn-lint $TEMPLATE"
cfn_lint -- "$TEMPLATE" || fail "cfn-lint found problems in infra/template.yaml"

# --- 2. SAM transform offline, then cfn-lint the result ---------------------------------------------
step "SAM transform (offline) -> $TRANSLATED"
rm -rf "$BUILD_DIR/statemachines"
if "$PYTHON" "$INFRA_DIR/tools/sam_offline.py" "$TEMPLATE" "$TRANSLATED" --asl-dir "$BUILD_DIR/statemachines"; then
    step "cfn-lint $TRANSLATED"
    cfn_lint -- "$TRANSLATED" || fail "cfn-lint found problems in the translated template"
else
    fail "the SAM transform failed"
    rm -f "$TRANSLATED"
fi

# --- 3. asl-validator ---------------------------------------------------------------------------------
# Note: --json-definition takes JSON TEXT; given a file name it prints an error and still exits 0.
step "asl-validator"
shopt -s nullglob
definitions=("$INFRA_DIR"/statemachines/*.asl.json "$BUILD_DIR"/statemachines/*.asl.json)
if [ ${#definitions[@]} -eq 0 ]; then
    fail "no state machine definitions found"
fi
for definition in "${definitions[@]}"; do
    "$ASL_VALIDATOR" --json-path "$definition" || fail "asl-validator rejected $definition"
done

# --- 4. policy tests on the translated template ----------------------------------------------------
step "policy tests (infra/tests)"
if [ -f "$TRANSLATED" ]; then
    INFRA_TRANSLATED_TEMPLATE="$TRANSLATED" "$PYTHON" -m unittest discover -s "$INFRA_DIR/tests" -t "$INFRA_DIR/tests" \
        || fail "policy tests failed"
else
    fail "policy tests skipped: no translated template"
fi

echo
if [ ${#failures[@]} -ne 0 ]; then
    echo "infra/validate.sh: ${#failures[@]} step(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "infra/validate.sh: all infra checks passed"
