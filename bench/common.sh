# Shared by the bench/*.sh scripts (sourced, not run).
# free_port: a TCP port on loopback that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# wait_port PORT PATH: until GET PATH answers 2xx (10 s at most).
wait_port() { for _ in $(seq 200); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return; sleep 0.05; done; echo "port $1 never answered"; exit 1; }
# need_commands CMD[:PACKAGE]...: installs Debian's package (PACKAGE, else CMD) for each command missing.
need_commands() {
  local need=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
  if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
}
# What nginx does as the reverse proxy every comparison runs (nginx_conf's LOCATION).
NGINX_PROXY='proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_buffering off;'
# nginx_conf FILE PORT UPSTREAM_PORT LOCATION [WORKERS] [HTTP_EXTRA] [LISTEN_EXTRA]: an nginx configuration
# listening on loopback PORT, `app` the upstream at UPSTREAM_PORT (64 idle connections kept), no access log;
# MASTER=off runs it as one process (under callgrind).
nginx_conf() {
  cat > "$1" <<CONF
worker_processes ${5:-1};
daemon off;
master_process ${MASTER:-on};
pid $1.pid;
error_log $1.error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  ${6:-}
  upstream app { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2 ${7:-};
    location / { $4 }
  }
}
CONF
}
