#!/usr/bin/env bash
# What `make test` needs besides Python, set up where it can be: the system packages the
# suite uses (Redis, PostgreSQL, Prometheus, RabbitMQ, Chromium) and the services running.
# `make test` and `.ci/run` both call it; it is quick when everything is there already.
# Without root or apt it installs nothing and prints the exact command to run instead.
set -uo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)          # metric source tests
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)  # queue_depth on RabbitMQ
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)                # Flower's Tasks page test
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-services: installing ${need_apt[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "test-services: missing ${need_apt[*]}; install them with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${need_apt[*]}" >&2
  fi
fi

port_open() { (echo > "/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
as_root() { [ "$(id -u)" = 0 ]; }

if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /tmp/nightowl-test-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/nightowl-test-redis --logfile /tmp/nightowl-test-redis/redis.log
fi
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  if as_root && command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  else
    echo "test-services: PostgreSQL is not answering on 127.0.0.1:5432; start it (sudo pg_ctlcluster 15 main start)" >&2
  fi
fi
if command -v rabbitmq-server >/dev/null 2>&1 && ! port_open 5672 && as_root; then
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
fi
for _ in $(seq 1 30); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break
  sleep 1
done
if command -v psql >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
exit 0
