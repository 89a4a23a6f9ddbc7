# Sourced by the device-run scripts (tools/run-*.sh) on the GPU machine: unpacks .gpu-pack if
# needed, and defines `step NAME COMMAND...`, which runs the command with its output in
# "$STEP_DIR/NAME.txt" and adds a line (exit status, seconds, the log's result lines) to the
# `summary` array that the script prints last.
export ATTN_REQUIRE_GPU=1
[ -d .gpu ] || python3 -c "import tarfile; tarfile.open('.gpu-pack/gpu.tar.xz').extractall()"
STEP_DIR=${STEP_DIR:-${OUT:-out}}
mkdir -p "$STEP_DIR"
summary=()
step() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$STEP_DIR/$name.txt" 2>&1; local rc=$?
  summary+=("$name: exit $rc ($((SECONDS - t0)) s) $(grep -E 'test result|passed on|cases failed|passed, |ERROR SUMMARY|RACECHECK SUMMARY|gpu-suite exit|max error|PASS|FAIL' "$STEP_DIR/$name.txt" | tr '\n' ' ' | cut -c1-400)")
}
