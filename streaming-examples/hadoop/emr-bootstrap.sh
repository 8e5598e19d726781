#!/usr/bin/env bash
# An EMR bootstrap action: installs kinesis-reader and kinesis-writer on every node of a
# cluster, from the wheel or the tarball that scripts/dist built, copied to S3, and checks
# that both run. For example:
#
#   aws emr create-cluster ... --bootstrap-actions \
#     Path=s3://BUCKET/emr-bootstrap.sh,Args=[s3://BUCKET/dist/kinesis_streaming-0.1.0-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl]
#
# Usage: emr-bootstrap.sh S3_URL [PREFIX]
#   S3_URL  a .whl (installed with the node's python3: the binaries and the
#           kinesis_streaming module) or a .tar.gz (its binaries, man pages and bash
#           completions copied under PREFIX)
#   PREFIX  where to install (default /usr/local, whose bin/ is on EMR's PATH)
# AWS_CLI names the aws command to use (default: aws, which EMR nodes have).
set -euo pipefail
SRC=${1:?usage: emr-bootstrap.sh s3://BUCKET/PATH/FILE.whl|FILE.tar.gz [PREFIX]}
PREFIX=${2:-/usr/local}
AWS=${AWS_CLI:-aws}
case "$SRC" in
  *.whl | *.tar.gz) ;;
  *) echo "emr-bootstrap.sh: $SRC: expected a .whl or a .tar.gz built by scripts/dist" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
file="$work/$(basename "$SRC")"
"$AWS" s3 cp --only-show-errors "$SRC" "$file"
# Bootstrap actions run as the hadoop user, who may write /usr/local only with sudo.
SUDO=
mkdir -p "$PREFIX" 2>/dev/null || true
[ -w "$PREFIX" ] || SUDO=sudo
case "$file" in
  *.whl)
    $SUDO python3 -m pip install --quiet --no-index --disable-pip-version-check \
      --prefix "$PREFIX" "$file"
    ;;
  *.tar.gz)
    tar -xzf "$file" -C "$work"
    dir=$(ls -d "$work"/kinesis-streaming-*/)
    $SUDO mkdir -p "$PREFIX/bin" "$PREFIX/share/man/man1" \
      "$PREFIX/share/bash-completion/completions"
    $SUDO install -m 755 "$dir"bin/* "$PREFIX/bin/"
    $SUDO install -m 644 "$dir"man/*.1 "$PREFIX/share/man/man1/"
    for b in kinesis-reader kinesis-writer; do
      $SUDO install -m 644 "$dir/completions/$b.bash" \
        "$PREFIX/share/bash-completion/completions/$b"
    done
    ;;
esac
"$PREFIX/bin/kinesis-reader" --version
"$PREFIX/bin/kinesis-writer" --version
