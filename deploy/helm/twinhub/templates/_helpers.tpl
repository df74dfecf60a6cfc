{{/* The chart's name. */}}
{{- define "twinhub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name. */}}
{{- define "twinhub.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "twinhub.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "twinhub.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "twinhub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twinhub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "twinhub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "twinhub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret with the NATS password. */}}
{{- define "twinhub.natsSecret" -}}
{{- if .Values.nats.existingSecret -}}
{{- .Values.nats.existingSecret -}}
{{- else if .Values.nats.password -}}
{{- include "twinhub.fullname" . -}}
{{- else -}}
{{- fail "twinhub needs the NATS password of user nats.user: set nats.password or nats.existingSecret (a Secret with key nats-password)" -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the ClickHouse URL, empty when history is off. */}}
{{- define "twinhub.clickhouseSecret" -}}
{{- if .Values.clickhouse.existingSecret -}}
{{- .Values.clickhouse.existingSecret -}}
{{- else if .Values.clickhouse.url -}}
{{- include "twinhub.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The listeners that are on, as a list of dicts (name, port). */}}
{{- define "twinhub.listeners" -}}
{{- $l := list (dict "name" "http" "port" .Values.listeners.http.port) (dict "name" "mqtt" "port" .Values.listeners.mqtt.port) -}}
{{- range $name := list "mqtts" "https" -}}
{{- $v := index $.Values.listeners $name -}}
{{- if $v.enabled -}}
{{- $l = append $l (dict "name" $name "port" $v.port) -}}
{{- end -}}
{{- end -}}
{{- toJson $l -}}
{{- end -}}
