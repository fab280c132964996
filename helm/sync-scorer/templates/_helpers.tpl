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

{{/* image.tag: a string, or an int64 (--set image.tag=123); a values file's number (float64) is
     refused in sync-scorer.checks, since YAML may have changed it (1.10 -> 1.1, 0123 -> 83) */}}
{{- define "sync-scorer.image" -}}
{{- $tag := .Values.image.tag -}}
{{- if or (kindIs "invalid" $tag) (eq (toString $tag) "") -}}{{- $tag = .Chart.AppVersion -}}{{- end -}}
{{ .Values.image.repository }}:{{ toString $tag }}
{{- end -}}

{{/* kafka.bootstrapServers without surrounding blanks: "" when it names no broker (the worker reads
     KAFKA_BOOTSTRAP_SERVERS="" as unset, so the pod then gets no such variable) */}}
{{- define "sync-scorer.bootstrapServers" -}}
{{- dig "bootstrapServers" "" (.Values.kafka | default dict) | default "" | toString | trim -}}
{{- end -}}

{{/* "true" when worker.extraEnv sets KAFKA_BOOTSTRAP_SERVERS itself (the chart's entry is then left
     out of the pod: one variable, the one the user named) */}}
{{- define "sync-scorer.extraEnvBrokers" -}}
{{- range $env := .Values.worker.extraEnv | default list }}
{{- if eq (toString $env.name) "KAFKA_BOOTSTRAP_SERVERS" }}true{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when a bind address is a loopback one (the kubelet probes the pod's IP, where a worker
     bound to loopback does not listen), "" otherwise */}}
{{- define "sync-scorer.loopback" -}}
{{- $host := . | toString | lower | trimSuffix "." | trimPrefix "[" | trimSuffix "]" -}}
{{- if or (hasPrefix "127." $host) (eq $host "localhost") (hasSuffix ".localhost" $host) (eq $host "::1") (eq $host "0:0:0:0:0:0:0:1") (hasPrefix "::ffff:127." $host) -}}
true
{{- end -}}
{{- end -}}

{{/* values the API server or the processes would refuse: fail at render time, one line */}}
{{- define "sync-scorer.checks" -}}
{{- $tag := .Values.image.tag }}
{{- /* a number from a values file (or --set-json) is what YAML made of the tag, not the tag
       written: 1.10 reads 1.1, 0123 reads 83 (octal), 1_000 reads 1000 (a review); --set
       image.tag=123 gives an int64, the digits given, and renders as written */}}
{{- if kindIs "float64" $tag }}
{{- fail (printf "image.tag %v is a number, which may not be the tag written (YAML reads 1.10 as 1.1, 0123 as 83): quote it in the values file (tag: \"1.10\") or pass it with --set-string" $tag) }}
{{- end }}
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
{{- /* the brokers: an empty kafka.bootstrapServers leaves KAFKA_BOOTSTRAP_SERVERS out of the pod
       (the worker reads "" as unset), so worker.config.kafka.bootstrap_servers (the schema refuses
       a blank one), an extraEnv variable (a Secret's, a ConfigMap's) or envFrom may name them;
       with none of these the worker would dial its default, 127.0.0.1:9092, inside the pod */}}
{{- $brokers := include "sync-scorer.bootstrapServers" . }}
{{- $brokersNamed := or $brokers (dig "kafka" "bootstrap_servers" "" $cfg) .Values.worker.envFrom }}
{{- $envHost := false }}
{{- range $env := .Values.worker.extraEnv | default list }}
{{- $envName := toString $env.name }}
{{- $named := or (hasKey $env "valueFrom") (trim (toString (dig "value" "" $env))) }}
{{- /* KAFKA_BOOTSTRAP_SERVERS as the worker reads it (os.environ: case-sensitive); the settings'
       SYNC_SCORER_KAFKA__BOOTSTRAP_SERVERS and the section's JSON in any case */}}
{{- if and $named (or (eq $envName "KAFKA_BOOTSTRAP_SERVERS") (eq (upper $envName) "SYNC_SCORER_KAFKA__BOOTSTRAP_SERVERS")) }}
{{- $brokersNamed = true }}
{{- end }}
{{- if and (eq (upper $envName) "SYNC_SCORER_KAFKA") (or (hasKey $env "valueFrom") (dig "bootstrap_servers" "" (fromJson (toString (dig "value" "" $env))))) }}
{{- $brokersNamed = true }}
{{- end }}
{{- if eq (upper $envName) "SYNC_SCORER_HTTP__HOST" }}
{{- $envHost = true }}
{{- end }}
{{- end }}
{{- if not $brokersNamed }}
{{- fail "kafka.bootstrapServers must name the brokers (host:port[,host:port...]) unless worker.config.kafka.bootstrap_servers, a worker.extraEnv KAFKA_BOOTSTRAP_SERVERS (e.g. valueFrom a Secret) or worker.envFrom does: as is, the worker would connect to 127.0.0.1:9092 inside its pod" }}
{{- end }}
{{- /* the ScaledObject's kafka triggers take the brokers from kafka.bootstrapServers only (KEDA reads
       neither the worker's config file nor its environment) */}}
{{- /* an extraEnv KAFKA_BOOTSTRAP_SERVERS beside kafka.bootstrapServers: the pod would get the
       variable twice (the later wins, Kubernetes warns) and KEDA the chart's brokers (a review) */}}
{{- if and $brokers (include "sync-scorer.extraEnvBrokers" .) .Values.worker.keda.enabled }}
{{- fail "worker.extraEnv names KAFKA_BOOTSTRAP_SERVERS and worker.keda is on: KEDA reads kafka.bootstrapServers only; name the brokers there and leave them out of extraEnv" }}
{{- end }}
{{- if and .Values.worker.keda.enabled (not $brokers) }}
{{- fail "worker.keda needs kafka.bootstrapServers: the ScaledObject's kafka triggers name the brokers from it (empty, KEDA could not read the lag)" }}
{{- end }}
{{- /* the kubelet probes the pod's IP: a worker listening on loopback is never ready, then killed
       (an extraEnv SYNC_SCORER_HTTP__HOST wins over the config's host: that one is checked below) */}}
{{- if and (not $envHost) (include "sync-scorer.loopback" (dig "http" "host" "0.0.0.0" $cfg)) }}
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
{{- /* the container port, the probes and the metrics Service follow worker.config.http.port: the
       port (or the whole section, as JSON) is set there only. The host may come from the env, e.g.
       the pod's IP (valueFrom fieldRef status.podIP), which the config file cannot name */}}
{{- if or (eq $envName "SYNC_SCORER_HTTP") (eq $envName "SYNC_SCORER_HTTP__PORT") }}
{{- fail (printf "worker.extraEnv must not set %s: the container port and probes follow worker.config.http, set the port there" $env.name) }}
{{- end }}
{{- if and (eq $envName "SYNC_SCORER_HTTP__HOST") (hasKey $env "value") (include "sync-scorer.loopback" $env.value) }}
{{- fail (printf "worker.extraEnv %s must not be a loopback address (the kubelet probes the pod's IP): use 0.0.0.0, :: or valueFrom fieldRef status.podIP, got %v" $env.name $env.value) }}
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
