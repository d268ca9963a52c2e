#!/usr/bin/env bash
# The Autobahn|Testsuite fuzzing client against examples/autobahn-echo.rs, an echo server
# built on the server's own link code (handshake, reads, back-pressure, frame writing,
# close). Cases 1-7, 9.1.1-9.1.3, 9.2.1-9.2.3 and 10 must be OK or INFORMATIONAL, except
# the NON-STRICT 6.4.3 and 6.4.4 (fail-fast on invalid UTF-8 inside a fragmented text
# message, which tungstenite checks only once the message is whole; its own echo server
# is NON-STRICT on them too), and every case's close behaviour must be OK or
# INFORMATIONAL. Exits 1 otherwise, after printing a summary table.
#
# wstest (autobahntestsuite 0.8.2) runs under Python 2.7: the 2.7.18 that pyenv has on
# these machines. It is installed there with pip, at the pinned versions below, when
# missing. The report goes to target/autobahn/report/ (index.html to browse).
#
# Usage: scripts/autobahn.sh [CASES...]    (default: the cases above, e.g. '6.*' '9.1.1')
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=target/autobahn
mkdir -p "$out"

# --- wstest ----------------------------------------------------------------------------
pyenv_root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
py="$pyenv_root/versions/2.7.18/bin/python"
if [ ! -x "$py" ]; then
    echo "autobahn: Python 2.7.18 is not at $py (wstest needs Python 2.7; pyenv install 2.7.18)" >&2
    exit 1
fi
# autobahntestsuite 0.8.2 and the last releases of its dependencies that run on
# Python 2.7 (pip 19 there has no resolver: every version is pinned).
cat >"$out/requirements.txt" <<'PINS'
autobahntestsuite==0.8.2
autobahn==0.10.9
Twisted==20.3.0
txaio==2.1.0
wsaccel==0.6.6
ujson==2.0.3
klein==20.6.0
Werkzeug==1.0.1
Tubes==0.2.1
Jinja2==2.11.3
MarkupSafe==1.1.1
pyOpenSSL==21.0.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
service-identity==21.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
unittest2==1.1.0
traceback2==1.4.0
linecache2==1.0.0
argparse==1.4.0
zope.interface==5.5.2
attrs==21.4.0
Automat==22.10.0
PyHamcrest==1.10.1
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
incremental==22.10.0
six==1.17.0
typing==3.10.0.0
enum34==1.1.10
ipaddress==1.0.23
setuptools==44.1.1
PINS
wstest="$(dirname "$py")/wstest"
if [ ! -x "$wstest" ] || ! "$py" -c 'import autobahntestsuite' 2>/dev/null; then
    echo "== installing wstest (autobahntestsuite 0.8.2) under $py"
    "$py" -m pip install --quiet --disable-pip-version-check -r "$out/requirements.txt"
fi

# --- the echo server -------------------------------------------------------------------
echo "== building examples/autobahn-echo.rs"
cargo build --locked --quiet --example autobahn-echo
echo_bin="target/debug/examples/autobahn-echo"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT
"$echo_bin" 127.0.0.1:0 >"$out/server.out" 2>"$out/server.err" &
server_pid=$!
url=""
for _ in $(seq 100); do
    url="$(sed -n 's/^autobahn-echo listening on //p' "$out/server.out")"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "autobahn: the echo server did not start:" >&2
    cat "$out/server.err" >&2
    exit 1
fi
echo "   $url (pid $server_pid)"

# --- the fuzzing client ----------------------------------------------------------------
if [ $# -gt 0 ]; then
    cases="$(printf '"%s",' "$@")"
    cases="[${cases%,}]"
else
    cases='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*",
            "9.1.1", "9.1.2", "9.1.3", "9.2.1", "9.2.2", "9.2.3", "10.*"]'
fi
rm -rf "$out/report"
cat >"$out/fuzzingclient.json" <<SPEC
{
    "outdir": "./report",
    "servers": [{"agent": "claude-ws", "url": "$url"}],
    "cases": $cases,
    "exclude-cases": [],
    "exclude-agent-cases": {}
}
SPEC
echo "== running wstest -m fuzzingclient (log: $out/wstest.log)"
start=$SECONDS
if ! (cd "$out" && timeout 1800 "$wstest" -m fuzzingclient -s fuzzingclient.json) \
    >"$out/wstest.log" 2>&1; then
    echo "autobahn: wstest failed:" >&2
    tail -20 "$out/wstest.log" >&2
    exit 1
fi
echo "   took $((SECONDS - start)) s"
stop_server

# --- the verdict -----------------------------------------------------------------------
"$py" - "$out/report/index.json" <<'VERDICT'
# -*- coding: utf-8 -*-
import json, sys
from collections import OrderedDict

ALLOWED_NON_STRICT = set(["6.4.3", "6.4.4"])
PASS = ("OK", "INFORMATIONAL")

cases = json.load(open(sys.argv[1]))["claude-ws"]
key = lambda c: [int(p) for p in c.split(".")]
groups = OrderedDict()
bad = []
for case in sorted(cases, key=key):
    r = cases[case]
    verdict, close = r["behavior"], r["behaviorClose"]
    g = groups.setdefault(case.split(".")[0], OrderedDict(
        (k, 0) for k in ("cases", "OK", "NON-STRICT", "INFORMATIONAL", "failed")))
    g["cases"] += 1
    if verdict in g and verdict != "failed":
        g[verdict] += 1
    else:
        g["failed"] += 1
    allowed = verdict in PASS or (verdict == "NON-STRICT" and case in ALLOWED_NON_STRICT)
    if not allowed or close not in PASS:
        bad.append("%s: %s, close %s (code %s)" % (case, verdict, close, r.get("remoteCloseCode")))

cols = ["cases", "OK", "NON-STRICT", "INFORMATIONAL", "failed"]
print("| group | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for name, g in groups.items():
    print("| %s | %s |" % (name, " | ".join(str(g[c]) for c in cols)))
total = dict((c, sum(g[c] for g in groups.values())) for c in cols)
print("| all | %s |" % " | ".join(str(total[c]) for c in cols))
non_ok = [c for c in sorted(cases, key=key) if cases[c]["behavior"] != "OK"]
print("not OK: " + (", ".join("%s %s" % (c, cases[c]["behavior"]) for c in non_ok) or "none"))
if bad:
    print("autobahn: FAILED (%d):" % len(bad))
    for line in bad:
        print("  " + line)
    sys.exit(1)
print("autobahn: passed (%d cases)" % len(cases))
VERDICT
