{{- define "kubespin.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubespin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubespin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubespin.labels" -}}
app.kubernetes.io/name: kubespin-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kubespin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
