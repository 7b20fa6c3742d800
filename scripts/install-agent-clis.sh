#!/usr/bin/env bash
# Installs the real agent CLIs (Claude Code, Codex, Gemini CLI) from npm into a private prefix,
# for the opt-in real-CLI test tier (tests/agents/real_cli, run with ARP_REAL_CLI=1).
#
# The prefix is .cache/agent-clis in the repository unless ARP_AGENT_CLIS_PREFIX names another;
# the binaries land in <prefix>/node_modules/.bin. Nothing is installed globally.
# Versions are pinned to the ones the tier was written against (docs/real-cli-notes.md);
# ARP_AGENT_CLIS_LATEST=1 takes the newest instead. Safe to run again: when every CLI already
# answers --version with the wanted version, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_VERSION=2.1.197
CODEX_VERSION=0.169.0
GEMINI_VERSION=0.61.0

prefix=${ARP_AGENT_CLIS_PREFIX:-$PWD/.cache/agent-clis}
bin=$prefix/node_modules/.bin
say() { echo "install-agent-clis: $*"; }

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    say "$tool is required (Node.js 20 or newer; e.g. apt-get install nodejs npm)" >&2
    exit 1
  }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  say "Node.js 20 or newer is required (Gemini CLI needs it); found $(node --version)" >&2
  exit 1
fi

if [ "${ARP_AGENT_CLIS_LATEST:-0}" = 1 ]; then
  CLAUDE_VERSION=latest CODEX_VERSION=latest GEMINI_VERSION=latest
fi

scratch_home=$(mktemp -d)
trap 'rm -rf "$scratch_home"' EXIT

# version_ok BINARY WANTED: the binary runs and prints the wanted version ("latest": any).
version_ok() {
  [ -x "$bin/$1" ] || return 1
  local out
  out=$(HOME=$scratch_home timeout 60 "$bin/$1" --version </dev/null 2>/dev/null) || return 1
  [ "$2" = latest ] || [[ "$out" == *"$2"* ]]
}

if [ "${ARP_AGENT_CLIS_LATEST:-0}" != 1 ] &&
   version_ok claude "$CLAUDE_VERSION" && version_ok codex "$CODEX_VERSION" &&
   version_ok gemini "$GEMINI_VERSION"; then
  say "already installed in $prefix (claude $CLAUDE_VERSION, codex $CODEX_VERSION, gemini $GEMINI_VERSION)"
  exit 0
fi

mkdir -p "$prefix"
say "installing into $prefix with npm $(npm --version), node $(node --version)"
say "  @anthropic-ai/claude-code@$CLAUDE_VERSION @openai/codex@$CODEX_VERSION @google/gemini-cli@$GEMINI_VERSION"
started=$(date +%s)
# --foreground-scripts: Claude Code's postinstall puts the native binary in place of its stub.
npm install --prefix "$prefix" --no-audit --no-fund --no-save --foreground-scripts \
  --loglevel=error \
  "@anthropic-ai/claude-code@$CLAUDE_VERSION" \
  "@openai/codex@$CODEX_VERSION" \
  "@google/gemini-cli@$GEMINI_VERSION"
say "npm finished in $(( $(date +%s) - started ))s"

# If the postinstall did not run (npm configured to skip scripts), do its work by hand.
claude_pkg=$prefix/node_modules/@anthropic-ai/claude-code
if ! version_ok claude "${CLAUDE_VERSION}" && [ -f "$claude_pkg/install.cjs" ]; then
  say "running Claude Code's postinstall by hand"
  (cd "$claude_pkg" && node install.cjs)
fi

failed=0
for cli in claude codex gemini; do
  if out=$(HOME=$scratch_home timeout 60 "$bin/$cli" --version </dev/null 2>/dev/null); then
    say "$cli: $(echo "$out" | tail -n 1) ($bin/$cli)"
  else
    say "$cli does not run: $bin/$cli --version failed" >&2
    failed=1
  fi
done
exit $failed
