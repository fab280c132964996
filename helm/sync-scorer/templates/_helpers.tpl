{{- define "sync-scorer.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* fullname plus a suffix, cut to 63 characters after the suffix is added (object names) */}}
{{- define "sync-scorer.name" -}}
{{- $room := sub 62 (len .suffix) | int -}}
{{- printf "%s-%s" (include "sync-scorer.fullname" .root | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "sync-scorer.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sync-scorer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end -}}

{{/* values the API server or the processes would refuse: fail at render time, one line */}}
{{- define "sync-scorer.checks" -}}
{{- if .Values.worker.enabled }}
{{- $port := int (dig "http" "port" 9108 (.Values.worker.config | default dict)) }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "worker.config.http.port must be 1..65535 in the chart (its probes and metrics Service use it), got %d" $port) }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas)) }}
{{- fail "worker.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "worker.autoscaling (CPU) and worker.keda (lag) both make an HPA: enable one" }}
{{- end }}
{{- if and .Values.worker.keda.enabled (gt (int .Values.worker.keda.minReplicas) (int .Values.worker.keda.maxReplicas)) }}
{{- fail "worker.keda.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- /* worker.config: each key and range is checked by values.schema.json (generated from
       worker/config.py); the rules between keys, which a schema cannot say, are here, with the
       worker's defaults where a key is left out */}}
{{- $cfg := .Values.worker.config | default dict }}
{{- $topics := dig "kafka" "topics" dict $cfg }}
{{- $audioParts := int (dig "audio" "partitions" 6 $topics) }}
{{- $roiParts := int (dig "roi" "partitions" 6 $topics) }}
{{- if ne $audioParts $roiParts }}
{{- fail (printf "worker.config.kafka.topics: the input topics must be co-partitioned (the worker refuses to start otherwise): audio has %d partitions, roi has %d" $audioParts $roiParts) }}
{{- end }}
{{- if eq (toString (dig "audio" "name" "av.audio-chunks" $topics)) (toString (dig "roi" "name" "av.roi-refs" $topics)) }}
{{- fail "worker.config.kafka.topics: the audio and roi topics must differ" }}
{{- end }}
{{- $win := dig "windowing" dict $cfg }}
{{- $buffered := int (dig "max_buffered_ms" 10000 $win) }}
{{- $needed := add (int (dig "window_ms" 1000 $win)) (int (dig "allowed_lateness_ms" 1000 $win)) }}
{{- if lt $buffered (int $needed) }}
{{- fail (printf "worker.config.windowing.max_buffered_ms must be at least window_ms + allowed_lateness_ms (%d), got %d" (int $needed) $buffered) }}
{{- end }}
{{- if and (eq (toString (dig "kafka" "wire_format" "schemaless" $cfg)) "confluent") (not (dig "kafka" "schema_registry_url" "" $cfg)) }}
{{- fail "worker.config.kafka.wire_format confluent needs worker.config.kafka.schema_registry_url" }}
{{- end }}
{{- /* KAFKA_BOOTSTRAP_SERVERS="" is "unset" to the worker: it would dial 127.0.0.1:9092 in the pod */}}
{{- if not (trim (toString .Values.kafka.bootstrapServers)) }}
{{- fail "kafka.bootstrapServers must name the brokers (host:port[,host:port...]): empty, the worker would connect to 127.0.0.1:9092 inside its pod" }}
{{- end }}
{{- /* the kubelet probes the pod's IP: a worker listening on loopback is never ready, then killed */}}
{{- $host := dig "http" "host" "0.0.0.0" $cfg | toString | lower | trimSuffix "." | trimPrefix "[" | trimSuffix "]" }}
{{- if or (hasPrefix "127." $host) (eq $host "localhost") (hasSuffix ".localhost" $host) (eq $host "::1") (eq $host "0:0:0:0:0:0:0:1") (hasPrefix "::ffff:127." $host) }}
{{- fail (printf "worker.config.http.host must not be a loopback address (the kubelet probes the pod's IP): leave it unset (0.0.0.0) or use 0.0.0.0 or ::, got %s" (dig "http" "host" "" $cfg)) }}
{{- end }}
{{- /* credentials: a ConfigMap is plain text. The worker's own markers (worker/config.py
       _SECRET_KEY_MARKERS; tests/unit/test_helm.py keeps the two lists the same) */}}
{{- $secretMarkers := list "password" "secret" "sasl.jaas.config" "ssl.key.pem" "ssl_key" }}
{{- $useSecret := "put credentials in a Secret (JSON of librdkafka keys) and pass it as worker.extraEnv SYNC_SCORER_KAFKA__SECRETS with valueFrom.secretKeyRef (values.yaml)" }}
{{- if dig "kafka" "secrets" dict $cfg }}
{{- fail (printf "worker.config.kafka.secrets would be plain text in the worker's ConfigMap: %s" $useSecret) }}
{{- end }}
{{- range $section := list "librdkafka" "consumer" "producer" }}
{{- range $key, $_ := dig "kafka" $section dict $cfg }}
{{- range $marker := $secretMarkers }}
{{- if contains $marker (lower $key) }}
{{- fail (printf "worker.config.kafka.%s.%s is a credential and would be plain text in the worker's ConfigMap: %s" $section $key $useSecret) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* worker.extraEnv (names are checked against the settings by values.schema.json); 45000: the
       worker's default shutdown_timeout_ms (worker/config.py; a test keeps it in step) */}}
{{- $shutdownMs := int (dig "shutdown_timeout_ms" 45000 $cfg) }}
{{- $shutdownFrom := "worker.config.shutdown_timeout_ms" }}
{{- if not (hasKey $cfg "shutdown_timeout_ms") }}{{- $shutdownFrom = "the worker's default shutdown_timeout_ms" }}{{- end }}
{{- range $env := .Values.worker.extraEnv | default list }}
{{- $envName := upper (toString $env.name) }}
{{- if or (eq $envName "SYNC_SCORER_HTTP") (hasPrefix "SYNC_SCORER_HTTP__" $envName) }}
{{- fail (printf "worker.extraEnv must not set %s: the container port and probes follow worker.config.http, set the port (and host) there" $env.name) }}
{{- end }}
{{- if and (hasPrefix "SYNC_SCORER_" $envName) (hasKey $env "value") }}
{{- range $marker := $secretMarkers }}
{{- if contains (upper $marker) $envName }}
{{- fail (printf "worker.extraEnv %s is a credential given as a plain value: take it from a Secret (valueFrom.secretKeyRef)" $env.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $envName "SYNC_SCORER_SHUTDOWN_TIMEOUT_MS") (hasKey $env "value") }}
{{- /* the environment wins over the config file (a value that is no number is the worker's to refuse) */}}
{{- $shutdownMs = atoi (toString $env.value) }}
{{- $shutdownFrom = printf "worker.extraEnv %s" $env.name }}
{{- end }}
{{- end }}
{{- /* SIGTERM: the worker drains for up to shutdown_timeout_ms, then exits anyway; the kubelet
       kills it at terminationGracePeriodSeconds: 5 s margin for the exit itself */}}
{{- $needS := add (div (add $shutdownMs 999) 1000) 5 }}
{{- if lt (int .Values.worker.terminationGracePeriodSeconds) (int $needS) }}
{{- fail (printf "worker.terminationGracePeriodSeconds must be at least %d (%s, %d ms, + 5 s margin): the pod would be killed mid-drain, got %d" (int $needS) $shutdownFrom $shutdownMs (int .Values.worker.terminationGracePeriodSeconds)) }}
{{- end }}
{{- end }}
{{- if .Values.serve.enabled }}
{{- $p := int .Values.serve.port }}
{{- if or (lt $p 1) (gt $p 65535) }}
{{- fail (printf "serve.port must be 1..65535, got %d" $p) }}
{{- end }}
{{- $g := int .Values.serve.grpcPort }}
{{- if and (ne $g -1) (or (lt $g 1) (gt $g 65535)) }}
{{- fail (printf "serve.grpcPort must be 1..65535, or -1 for no gRPC, got %d" $g) }}
{{- end }}
{{- if not (and (gt (float64 .Values.serve.maxBodyMb) 0.0) (le (float64 .Values.serve.maxBodyMb) 1024.0)) }}
{{- fail (printf "serve.maxBodyMb must be positive and at most 1024 (serve refuses it otherwise), got %v" .Values.serve.maxBodyMb) }}
{{- end }}
{{- /* SIGTERM: requests in flight have serve.shutdownGraceSeconds, then 5 s to answer once stopped
       (worker/serving/http.py CANCEL_WAIT_S); 5 s margin for the exit itself */}}
{{- if gt (float64 .Values.serve.shutdownGraceSeconds) 3600.0 }}
{{- fail (printf "serve.shutdownGraceSeconds must be 0..3600 (serve refuses it otherwise), got %v" .Values.serve.shutdownGraceSeconds) }}
{{- end }}
{{- $serveNeedS := add (ceil (float64 .Values.serve.shutdownGraceSeconds)) 10 }}
{{- if lt (float64 .Values.serve.terminationGracePeriodSeconds) (float64 $serveNeedS) }}
{{- fail (printf "serve.terminationGracePeriodSeconds must be at least %d (serve.shutdownGraceSeconds %v + 5 s to answer stopped requests + 5 s margin): the pod would be killed mid-drain, got %v" (int $serveNeedS) .Values.serve.shutdownGraceSeconds .Values.serve.terminationGracePeriodSeconds) }}
{{- end }}
{{- end }}
{{- end -}}
