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
{{- $port := int (dig "http" "port" 9108 .Values.worker.config) }}
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
{{- end }}
{{- if .Values.serve.enabled }}
{{- range $key := list "port" "grpcPort" }}
{{- $p := int (get $.Values.serve $key) }}
{{- if or (lt $p 1) (gt $p 65535) }}
{{- fail (printf "serve.%s must be 1..65535, got %d" $key $p) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
