{{/*
nginx.conf of the failover gateway. Open-source nginx has no active health checks, so health is passive:
a connect error, timeout or 502/503/504 from the primary marks it failed (max_fails) for fail_timeout; the
request is replayed on the `backup` (the standby) - POSTs too, on the synthesis paths only, because synthesis
is idempotent (same input -> same audio, no side effects). After fail_timeout one live request probes the
primary again: if it answers, traffic fails back. The failover test (tests/k8s/failover.py) runs this file.
*/}}
{{- define "tts.nginxConf" -}}
{{- $g := .Values.gateway -}}
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
        server {{ $g.primary.host }}:{{ $g.primary.port }} max_fails={{ $g.maxFails }} fail_timeout={{ $g.failTimeout }};
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

        # Idempotent synthesis: replay on the backup even for POST (non_idempotent). Also on 500 (a server
        # fault, never the client's: bad input is 4xx) and 404 (these routes always exist, so a 404 means the
        # Serve app is not deployed yet, e.g. a cluster coming back; 404s do not count towards max_fails).
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
