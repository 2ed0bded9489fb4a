#!/usr/bin/env bash
# Makes the secrets compose.yaml mounts, in docker/secrets/ (or $FLOE_SECRETS_DIR): the cluster
# secret, S3 keys for SeaweedFS and Floe, a CA and the coordinator's TLS certificate (for the
# names `coordinator` and `localhost`), and a users file with one admin whose password is printed
# once. Needs openssl and a floe binary ($FLOE_BIN, or `floe` on PATH, for `floe passwd`).
set -euo pipefail
cd "$(dirname "$0")"
out="${FLOE_SECRETS_DIR:-secrets}"
floe="${FLOE_BIN:-floe}"
mkdir -p "$out"
umask 022 # the containers run as a non-root user and must read the mounted files

openssl rand -hex 32 > "$out/cluster_secret"

access="floe$(openssl rand -hex 8)"
secret="$(openssl rand -hex 20)"
printf 'FLOE_S3_ACCESS_KEY_ID=%s\nFLOE_S3_SECRET_ACCESS_KEY=%s\n' "$access" "$secret" > "$out/s3.env"
cat > "$out/s3.json" <<JSON
{"identities": [{"name": "floe",
                 "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON

ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 365 -subj "/CN=Floe compose CA" \
  -keyout "$out/ca-key.pem" -out "$out/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=coordinator" -keyout "$out/tls-key.pem" -out "$out/tls.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:coordinator,DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
  "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" > "$out/tls.ext"
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
  -days 365 -extfile "$out/tls.ext" -out "$out/tls-cert.pem" 2>/dev/null
cat "$out/tls-cert.pem" "$out/ca.pem" > "$out/tls-chain.pem"
rm -f "$out/tls.csr" "$out/tls.ext" "$out/ca.srl"
chmod 600 "$out/ca-key.pem"

password="$(openssl rand -base64 18)"
printf '%s\n' "$password" | "$floe" passwd --user admin --role admin > "$out/users.txt"
echo "secrets written to $out; sign in as admin with password: $password"
