#!/usr/bin/env bash
# make-certs.sh: a private CA and the certificates of the central Mosquitto example.
#
# Usage: deploy/mosquitto/make-certs.sh OUT_DIR [SITE/NODE ...]
#   OUT_DIR       where the files go (created; existing files are kept, so the CA survives
#                 adding nodes later)
#   SITE/NODE     one node certificate per argument, e.g. phl/pi-001 (default: phl/pi-001)
#   BROKER_HOST   environment: the broker's DNS name, put in its certificate beside
#                 localhost and 127.0.0.1 (default: broker.example.com)
#   DAYS          environment: validity of the broker, node and CRM certificates (default 825)
#
# Writes (PEM, keys PKCS#8 EC P-256, mode 0600):
#   ca.pem ca.key                 the CA (10 years); ca.key signs everything, keep it offline
#   broker.pem broker.key         the broker (serverAuth)
#   crm.pem crm.key               the CRM, certificate CN "crm" (clientAuth)
#   node-SITE-NODE.pem/.key       a node, certificate CN "SITE/NODE" (clientAuth)
#
# The broker runs with use_identity_as_username: a client's MQTT user name is its
# certificate's CN, and the ACL (acl beside this script) lets CN "SITE/NODE" write only under
# ccedge/v1/nodes/SITE/NODE/. Issue node certificates only through this CA and only in that
# form: a CN of just "SITE" would match nothing, but keep the CA's key where only the people
# who commission nodes can use it.
#
# On the node: mqtt.ca_file = ca.pem, mqtt.cert_file = node-SITE-NODE.pem,
# mqtt.key_file = node-SITE-NODE.key, mqtt.url = "mqtts://BROKER_HOST:8883".
set -euo pipefail

out="${1:?usage: make-certs.sh OUT_DIR [SITE/NODE ...]}"
shift
nodes=("$@")
[ "${#nodes[@]}" -gt 0 ] || nodes=(phl/pi-001)
broker_host="${BROKER_HOST:-broker.example.com}"
days="${DAYS:-825}"

mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.pem ]; then
  key ca.key
  openssl req -new -x509 -key ca.key -out ca.pem -days 3650 -sha256 \
    -subj "/O=ccedge/CN=ccedge MQTT CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
fi

# sign NAME CN EXTENSIONS: NAME.key (new) and NAME.pem signed by the CA.
sign() {
  local name="$1" cn="$2" ext="$3"
  [ -f "$name.pem" ] && return 0
  key "$name.key"
  # -subj separates RDNs with '/': a '/' inside the CN is escaped.
  openssl req -new -key "$name.key" -subj "/O=ccedge/CN=${cn//\//\\/}" -out "$name.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyAgreement" \
    "authorityKeyIdentifier=keyid" "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days "$days" -sha256 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

sign broker "$broker_host" \
  "extendedKeyUsage=serverAuth
subjectAltName=DNS:$broker_host,DNS:localhost,IP:127.0.0.1,IP:::1"
sign crm crm "extendedKeyUsage=clientAuth"
for sn in "${nodes[@]}"; do
  if ! [[ "$sn" =~ ^[A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-]{1,64}$ ]]; then
    echo "make-certs.sh: '$sn' is not SITE/NODE (letters, digits, _ and -)" >&2
    exit 2
  fi
  sign "node-${sn/\//-}" "$sn" "extendedKeyUsage=clientAuth"
done
chmod 0644 ./*.pem
ls -1 "$PWD"
