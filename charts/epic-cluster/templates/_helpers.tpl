{{- define "epic-cluster.name" -}}
epic-cluster-controller
{{- end -}}

{{- define "epic-cluster.labels" -}}
app.kubernetes.io/name: {{ include "epic-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "epic-cluster.selector" -}}
app.kubernetes.io/name: {{ include "epic-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
