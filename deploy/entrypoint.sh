#!/bin/sh
# Entrypoint of the driftd image; also what tests/deploy runs, so the image's start is tested.
#
#   entrypoint.sh [run|infer|config|demo|bench ...]   exec `driftd` with these arguments
#   entrypoint.sh healthcheck [/healthz|/readyz]      exit 0 if this container's endpoint
#                                                     answers 200, else 1 (Docker HEALTHCHECK)
#
# No arguments means `driftd run`. The metrics endpoint binds where DRIFTD_METRICS__HOST says:
# the image sets 0.0.0.0 so Prometheus can reach it from another container; outside a
# container the daemon's own default (127.0.0.1) applies. The health check always asks
# loopback, which a 0.0.0.0 listener also answers.
set -eu

if [ $# -eq 0 ]; then
    set -- run
fi

if [ "$1" = "healthcheck" ]; then
    probe=${2:-/healthz}
    port=${DRIFTD_METRICS__PORT:-9464}
    exec "${DRIFTD_PYTHON:-python3}" - "$port" "$probe" <<'PY'
import sys
import urllib.error
import urllib.request

port, probe = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
try:
    with opener.open(f"http://127.0.0.1:{port}{probe}", timeout=3) as response:
        print(response.read().decode(errors="replace").strip())
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as error:
    print(f"{probe} failed: {error}")
    sys.exit(1)
PY
fi

exec driftd "$@"
