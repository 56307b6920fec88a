#!/bin/sh
# The PKI for deploy/docker-compose.yml, made with the host's `scifed` (pip install .):
#   deploy/compose-pki.sh init [PUBLIC_HOST...]   the CA, the coordinator's certificate and
#                                                 node-a's key, CSR and certificate
#   deploy/compose-pki.sh crl                     sign the CRL again (at least daily)
# Run it in deploy/ or set SCIFED_COMPOSE_DIR. The coordinator's certificate names
# "coordinator" (the compose service the node dials), localhost and 127.0.0.1 (the
# SuperLink and its proxy inside the container), and any PUBLIC_HOST given (how hosts
# outside reach it). ./ca keeps the CA's private key and is mounted nowhere;
# ./coordinator-pki gets the coordinator's files only. The containers run as uid 10001:
# run this as root, or give the files to that uid yourself (the script says how).
set -eu
SCIFED=${SCIFED:-scifed}
cd "${SCIFED_COMPOSE_DIR:-$(dirname "$0")}"

publish_crl() {  # replace by rename inside the mounted directory: the coordinator sees it
    cp ca/crl.pem coordinator-pki/.crl.pem.new
    chmod 0644 coordinator-pki/.crl.pem.new
    mv coordinator-pki/.crl.pem.new coordinator-pki/crl.pem
}

give_to_containers() {
    if [ "$(id -u)" = 0 ]; then
        chown -R 10001:10001 coordinator-pki node-a
    else
        echo "now: sudo chown -R 10001:10001 $(pwd)/coordinator-pki $(pwd)/node-a"
    fi
}

case "${1:-}" in
init)
    shift
    hosts="--host coordinator --host localhost --host 127.0.0.1"
    for h in "$@"; do hosts="$hosts --host $h"; done
    # shellcheck disable=SC2086  # one word per option, on purpose
    $SCIFED ca init --ca-dir ca $hosts
    mkdir -p coordinator-pki
    for f in ca.crt coordinator.crt coordinator.key; do cp "ca/$f" coordinator-pki/; done
    chmod 0600 coordinator-pki/coordinator.key
    publish_crl
    $SCIFED node init --name node-a --platform "Example platform A" \
        --coordinator coordinator:7443 --dir node-a
    $SCIFED ca sign node-a/pki/node.csr --role node --ca-dir ca --out node-a/pki/node-a.crt
    cp ca/ca.crt node-a/pki/
    rm node-a/node.yaml  # host paths; the container reads compose/node-a.yaml
    give_to_containers
    ;;
crl)
    $SCIFED ca crl --ca-dir ca
    publish_crl
    ;;
*)
    echo "usage: $0 init [PUBLIC_HOST...] | crl" >&2
    exit 2
    ;;
esac
