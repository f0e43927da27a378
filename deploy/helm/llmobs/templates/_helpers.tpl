{{/* Names and labels shared by every object of the chart. */}}

{{- define "llmobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmobs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<component>, within the 63 characters of a label value. */}}
{{- define "llmobs.componentName" -}}
{{- printf "%s-%s" (include "llmobs.fullname" .root | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{- define "llmobs.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "llmobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "exporter"). */}}
{{- define "llmobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmobs.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llmobs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "llmobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmobs.componentName" (dict "root" . "component" "exporter")) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The exporter serves HTTPS with webConfig.tls. */}}
{{- define "llmobs.exporterScheme" -}}
{{- if .Values.webConfig.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "llmobs.webConfigEnabled" -}}
{{- if or .Values.webConfig.tls.enabled .Values.webConfig.basicAuth.enabled }}true{{ end }}
{{- end }}

{{/* Scrape annotations only while no Operator object scrapes the same pods. */}}
{{- define "llmobs.exporterAnnotated" -}}
{{- if and .Values.scrapeAnnotations (not .Values.serviceMonitor.enabled) (not .Values.podMonitor.enabled) }}true{{ end }}
{{- end }}

{{- define "llmobs.loadgenAnnotated" -}}
{{- if and .Values.scrapeAnnotations (not .Values.loadgen.podMonitor.enabled) }}true{{ end }}
{{- end }}

{{/* The job label the alerts in prometheus/rules/ expect (ServiceMonitor/PodMonitor jobLabel). */}}
{{- define "llmobs.jobLabelKey" -}}llmobs.io/job{{- end }}
