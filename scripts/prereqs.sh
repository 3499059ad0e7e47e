#!/usr/bin/env bash
# System prerequisites of the local stack: a JDK 17 (Kafka, Cassandra 5.0, Elasticsearch 8, Spark 4),
# Maven (resolves their jars from Maven Central) and Python 3.11. Installs what is missing on Debian.
set -euo pipefail
missing=()
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/jvm/*17*/bin/java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v setpriv >/dev/null || missing+=(util-linux)
# Elasticsearch runs as its own user and must reach $COVIDFLOW_HOME through a private /root: setfacl.
command -v setfacl >/dev/null || missing+=(acl)
if [ ${#missing[@]} -eq 0 ]; then
  echo "prereqs: JDK 17, Maven, setpriv and setfacl present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "prereqs: please install: ${missing[*]}" >&2
  exit 1
fi
echo "prereqs: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
