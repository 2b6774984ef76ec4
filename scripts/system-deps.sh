#!/bin/sh
# Installs the Debian packages countersign's tests and demo run for real:
# the reference Notary 0.7 (notary, notary-server, notary-signer) and PostgreSQL
# (the storage tests start a throwaway server with its initdb and postgres), and
# the CNCF distribution registry (docker-registry) and skopeo, which the registry
# client tests run against (tests/support/registryserver.py), and the Wapiti web
# scanner, the dynamic stage's tool in the gate tests (tests/interop/test_stage_tools.py);
# busybox-static, from which the sandbox tests build the sample image without network;
# strace, which shows a pull's fsyncs (tests/interop/test_pull_fsync.py).
# Usage: scripts/system-deps.sh   (root installs with apt-get; others get told what to run)
set -eu

missing=""
for pair in notary:notary notary-server:notary notary-signer:notary \
    docker-registry:docker-registry skopeo:skopeo wapiti:wapiti busybox:busybox-static \
    strace:strace; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
    fi
done

# Debian keeps PostgreSQL's server binaries off PATH, in /usr/lib/postgresql/<version>/bin
# (tests/support/pgserver.py looks there too).
have_postgresql() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            return 0
        fi
    done
    return 1
}
have_postgresql || missing="$missing postgresql"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "countersign needs these Debian packages:$missing" >&2
    echo "install them as root:  apt-get install -y$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "installing Debian packages:$missing" >&2
# shellcheck disable=SC2086  # word splitting of the package list is intended
if ! apt-get install -y --no-install-recommends $missing </dev/null; then
    apt-get update </dev/null
    apt-get install -y --no-install-recommends $missing </dev/null
fi
