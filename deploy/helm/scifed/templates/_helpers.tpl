{{/* Names, labels and the settings several templates share. */}}

{{- define "scifed.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "scifed.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scifed.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "scifed.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "scifed.coordinatorName" -}}
{{ include "scifed.fullname" . }}-coordinator
{{- end -}}

{{- define "scifed.postgresqlName" -}}
{{ include "scifed.fullname" . }}-postgresql
{{- end -}}

{{/* The Secret and key holding the database password, or nothing (SQLite). */}}
{{- define "scifed.dbPasswordSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{ .Values.postgresql.existingSecret | default (include "scifed.postgresqlName" .) }}
{{- else if .Values.externalDatabase.url -}}
{{ required "externalDatabase.existingSecret is required with externalDatabase.url" .Values.externalDatabase.existingSecret }}
{{- end -}}
{{- end -}}

{{- define "scifed.dbPasswordKey" -}}
{{- if .Values.postgresql.enabled -}}
{{ .Values.postgresql.passwordKey }}
{{- else -}}
{{ .Values.externalDatabase.passwordKey }}
{{- end -}}
{{- end -}}

{{/* The coordinator's SQLAlchemy URL (no password: libpq reads PGPASSWORD), or nothing. */}}
{{- define "scifed.databaseUrl" -}}
{{- if .Values.postgresql.enabled -}}
postgresql+psycopg://{{ .Values.postgresql.user }}@{{ include "scifed.postgresqlName" . }}:{{ .Values.postgresql.port }}/{{ .Values.postgresql.database }}
{{- else if .Values.externalDatabase.url -}}
{{ .Values.externalDatabase.url }}
{{- end -}}
{{- end -}}

{{- define "scifed.coordinatorAddress" -}}
{{ .Values.coordinatorAddress | default (printf "%s:%d" (include "scifed.coordinatorName" .) (int .Values.coordinator.grpcPort)) }}
{{- end -}}

{{- define "scifed.flowerAddress" -}}
{{ .Values.flowerSuperlinkAddress | default (printf "%s:%d" (include "scifed.coordinatorName" .) (int (include "scifed.flowerProxyPort" .))) }}
{{- end -}}

{{/* Where every container of the chart mounts its PKI Secret, state and data. */}}
{{- define "scifed.pkiDir" -}}/etc/scifed/pki{{- end -}}
{{- define "scifed.stateDir" -}}/var/lib/scifed/state{{- end -}}
{{- define "scifed.dataDir" -}}/srv/data{{- end -}}

{{/* The SuperLink's loopback port and its proxy's port: files/flower-proxy.conf names both. */}}
{{- define "scifed.superlinkPort" -}}9093{{- end -}}
{{- define "scifed.flowerProxyPort" -}}9443{{- end -}}
