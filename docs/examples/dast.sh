#!/bin/sh
# The dynamic stage's check (policy.yaml): run the image that countersign pinned by
# digest, scan the running service with Wapiti, and stop it. What is scanned is exactly
# the digest the stage signs.
#
# Usage: dast.sh REGISTRY/REPOSITORY@sha256:... REPORT.json
# Environment: DAST_PORT (8080) the service's port in the container; DAST_HOST
# (127.0.0.1) where the published port is reached (the docker service's host name on
# GitLab's docker-in-docker, e.g. "docker"); DAST_BIND (127.0.0.1) the host address the
# port is published on; DAST_MODULES (xss,sql,exec,file,crlf,redirect,http_headers,csp).
set -eu
image=$1
report=$2
port=${DAST_PORT:-8080}
host=${DAST_HOST:-127.0.0.1}
bind=${DAST_BIND:-127.0.0.1}
modules=${DAST_MODULES:-xss,sql,exec,file,crlf,redirect,http_headers,csp}
name="dast-$$"
state=$(mktemp -d)
trap 'docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT

docker run -d --name "$name" -p "$bind:$port:$port" "$image" >/dev/null
tries=0
until curl -sS -o /dev/null --max-time 2 "http://$host:$port/"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "dast.sh: the service did not answer on http://$host:$port/ within 60 s" >&2
        docker logs "$name" >&2 || true
        exit 1
    fi
    sleep 1
done

# Wapiti 3.0.4 loads every module at start; an empty apps.json keeps its wapp module
# from downloading a database, and --no-bugreport keeps it from uploading crash reports.
mkdir -p "$state/config"
echo '{}' > "$state/config/apps.json"
wapiti -u "http://$host:$port/" -m "$modules" --scope folder -d 3 --max-scan-time 900 \
    -t 10 -f json -o "$report" --flush-session --store-session "$state/session" \
    --store-config "$state/config" --no-bugreport -v 1
