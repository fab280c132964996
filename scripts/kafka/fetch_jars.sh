#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (and a log4j2 SLF4J binding) from Maven Central into
# .kafka/libs, as listed in scripts/kafka/pom.xml. Idempotent: a stamp holding the pom's hash marks
# a complete copy, so a warm run costs a sha256sum and nothing else. Maven caches in ~/.m2.
#   env: KAFKA_LIBS_DIR (default <repo>/.kafka/libs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
libs="${KAFKA_LIBS_DIR:-$repo/.kafka/libs}"
pom="$here/pom.xml"
stamp="$libs/.complete"

want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  exit 0
fi

for tool in mvn java; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch_jars: '$tool' not found; run scripts/install_system_deps.sh (Java 17 + Maven)" >&2
    exit 1
  fi
done

echo "fetch_jars: fetching Kafka broker jars into $libs (Maven Central, cached in ~/.m2)" >&2
# Copy into a scratch dir and swap it in, so an interrupted fetch never leaves a half-filled libs/
# that a later run would take for complete.
tmp="$libs.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
# Debian's Maven 3.8 prints stray colour codes even in batch mode; strip them (pipefail keeps mvn's
# exit status).
mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
  | sed 's/\x1b\[[0-9;]*m//g' >&2
if ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null; then
  echo "fetch_jars: Maven finished but no kafka_2.13 jar was copied" >&2
  exit 1
fi
echo "$want" > "$tmp/.complete"
rm -rf "$libs"
mkdir -p "$(dirname "$libs")"
mv "$tmp" "$libs"
trap - EXIT
echo "fetch_jars: $(ls "$libs"/*.jar | wc -l) jars in $libs" >&2
