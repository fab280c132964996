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
{{- end }}
{{- end -}}
