{{- define "soloist.selector" -}}
app.kubernetes.io/name: soloist
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "soloist.labels" -}}
{{ include "soloist.selector" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
