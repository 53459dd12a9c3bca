{{- define "epic-gateway.name" -}}
epic-gateway-controller
{{- end -}}

{{- define "epic-gateway.labels" -}}
app.kubernetes.io/name: {{ include "epic-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "epic-gateway.selector" -}}
app.kubernetes.io/name: {{ include "epic-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A CIDR from a CIDR or a single address (/32 or /128). */}}
{{- define "epic-gateway.cidr" -}}
{{- if contains "/" . -}}
{{ . }}
{{- else if contains ":" . -}}
{{ . }}/128
{{- else -}}
{{ . }}/32
{{- end -}}
{{- end -}}
