{{/*
nginx.conf of the failover gateway. Open-source nginx has no active health checks, so health is passive:
a connect error, timeout or 500/502/503/504 from an upstream counts as a failed attempt, and the request is
replayed on the next upstream - POSTs too, on the synthesis paths only, because synthesis is idempotent (same
input -> same audio, no side effects). nginx never replays once a byte went to the client.
The primary is listed `primaryAttempts` times (identical server lines = separate peers): a request that hit a
dying ingress replica (the Serve proxy answers 500, or 503 when no replica is left) is replayed on the same
cluster first, where the proxy routes it to a surviving replica; only when every primary slot failed does it
go to the `backup` (the standby). A slot with maxFails failures within failTimeout is skipped for failTimeout,
then one live request probes it again: if it answers, traffic fails back. tests/k8s/failover.py and the
ingress-kill reliability test (benchmarks/reliability.py) run this file with real nginx.
*/}}
{{- define "tts.nginxConf" -}}
{{- $g := .Values.gateway -}}
{{- if lt (int $g.primaryAttempts) 1 }}{{ fail "gateway.primaryAttempts must be >= 1" }}{{ end -}}
{{- if le (int $g.nextUpstreamTries) (int $g.primaryAttempts) }}
{{- fail "gateway.nextUpstreamTries must exceed gateway.primaryAttempts (else a replay never reaches the standby)" }}
{{- end -}}
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {
    worker_connections 4096;
}

http {
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;

    # msec = request end (epoch s); upstream lists every server tried, the last one answered.
    log_format tts '$time_iso8601 msec=$msec rid=$request_id $remote_addr "$request" $status '
                   '$body_bytes_sent rt=$request_time upstream="$upstream_addr" '
                   'ustatus="$upstream_status" urt="$upstream_response_time"';
    access_log /dev/stdout tts;
    server_tokens off;
    client_max_body_size {{ $g.clientMaxBodySize }};

    upstream tts_backends {
        zone tts_backends 64k;   # failure state shared by all worker processes
        {{- range until (int $g.primaryAttempts) }}
        server {{ $g.primary.host }}:{{ $g.primary.port }} max_fails={{ $g.maxFails }} fail_timeout={{ $g.failTimeout }};
        {{- end }}
        server {{ $g.standby.host }}:{{ $g.standby.port }} backup max_fails={{ $g.maxFails }} fail_timeout={{ $g.failTimeout }};
        keepalive 32;
    }

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # Both clusters' Ingresses serve the same public host name: send it as Host (and SNI).
    proxy_set_header Host {{ $g.upstreamHost | default .Values.ingress.host }};
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-ID $request_id;
    proxy_hide_header X-Request-ID;
    add_header X-Request-ID $request_id always;
    proxy_connect_timeout {{ $g.connectTimeout }};
    proxy_read_timeout {{ $g.readTimeout }};
    proxy_send_timeout {{ $g.readTimeout }};
    proxy_next_upstream_tries {{ $g.nextUpstreamTries }};
    proxy_next_upstream_timeout {{ $g.nextUpstreamTimeout }};
    {{- if eq $g.scheme "https" }}
    proxy_ssl_server_name on;
    proxy_ssl_name {{ $g.upstreamHost | default .Values.ingress.host }};
    proxy_ssl_protocols TLSv1.2 TLSv1.3;
    {{- end }}

    server {
        listen {{ $g.listenPort }};

        location = /gateway/healthz {
            access_log off;
            default_type text/plain;
            return 200 "ok\n";
        }

        # Idempotent synthesis: replay even a POST (non_idempotent) on the next primary slot, then the backup.
        # Also on 500: a server fault, never the client's (bad input is 4xx); it is what the Serve proxy
        # answers when the ingress replica holding the request dies. And on 404 (these routes always exist, so
        # a 404 means the Serve app is not deployed yet, e.g. a cluster coming back; 404s do not count
        # towards max_fails).
        location ~ ^({{ join "|" $g.idempotentPaths }})$ {
            proxy_pass {{ $g.scheme }}://tts_backends;
            proxy_next_upstream error timeout http_500 http_502 http_503 http_504 http_404 non_idempotent;
        }

        # Everything else (GET /health, /ready, docs): GET/HEAD are retried, other methods are not.
        location / {
            proxy_pass {{ $g.scheme }}://tts_backends;
            proxy_next_upstream error timeout http_502 http_503 http_504;
        }
    }
}
{{- end -}}
