# Shared by the bench/*.sh scripts (sourced, not run).
# free_port: a TCP port on loopback that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# wait_port PORT PATH: until GET PATH answers 2xx (10 s at most).
wait_port() { for _ in $(seq 200); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return; sleep 0.05; done; echo "port $1 never answered"; exit 1; }
