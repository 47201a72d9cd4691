#!/usr/bin/env bash
# Makes a throwaway certificate authority and certificates for trying out (and testing) TLS on the
# coordinator channel (docs/security.md). Not for production: no passphrases, short-lived keys.
#
#   scripts/make_test_ca.sh OUT_DIR
#
# writes into OUT_DIR:
#   ca.pem                   the CA's certificate (sync.coordinator.tls.ca on every process)
#   server.pem, server.key   the coordinator's certificate, SAN DNS:localhost and IP:127.0.0.1;
#                            good for client authentication too, so one config can serve a whole
#                            `loco launch`
#   client.pem, client.key   a worker's client certificate
#   other-ca.pem, rogue.pem, rogue.key   a second CA and a client certificate it signed, that the
#                            first CA does not trust
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"
umask 077

days=30
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

# ca NAME SUBJECT: a self-signed CA.
ca() {
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

# leaf NAME CA SUBJECT EXTFILE-TEXT: a certificate for NAME signed by CA.
leaf() {
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "loco test CA"
leaf server ca "localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client ca "loco test worker" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
ca other-ca "loco untrusted CA"
leaf rogue other-ca "loco untrusted worker" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ./*.srl
chmod 644 ./*.pem
echo "test CA and certificates in $(pwd)"
