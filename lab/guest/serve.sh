#!/bin/sh
# VM-H service for `python3 -m lab up`: serve the iSCSI export until the host touches /lab/stop.
#   serve.sh edifd   the project's daemon (config written by the host into /lab/edifd.toml)
#   serve.sh fileio  a plain LIO fileio LUN (lab.guest.iscsi_export), to prove the plumbing without edifd
backend=${1:-fileio}
case "$backend" in
fileio)
    exec python3 -m lab.guest.iscsi_export
    ;;
edifd)
    python3 -m edifd run --config /lab/edifd.toml --ready-file /lab/ready --teardown &
    pid=$!
    while [ ! -e /lab/stop ] && kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    # Stopped on request: SIGTERM's 143 is the expected way out.
    if [ -e /lab/stop ] && [ "$rc" = 143 ]; then rc=0; fi
    echo "edifd exited rc=$rc"
    exit "$rc"
    ;;
*)
    echo "serve.sh: unknown backend '$backend' (fileio|edifd)" >&2
    exit 2
    ;;
esac
