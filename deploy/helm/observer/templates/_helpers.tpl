{{/* The chart's name, or nameOverride. */}}
{{- define "observer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride, else the release name when it holds the chart's
name (`helm install observer`), else RELEASE-observer. */}}
{{- define "observer.fullname" -}}
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

{{- define "observer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What selects the agent's pods (the kubectl plugin's default selector is the name). */}}
{{- define "observer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "observer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "observer.labels" -}}
helm.sh/chart: {{ include "observer.chart" . }}
{{ include "observer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: observer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "observer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "observer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "observer.image" -}}
{{- if .Values.image.digest }}
{{- if not (hasPrefix "sha256:" .Values.image.digest) }}
{{- fail (printf "image.digest must be sha256:<hex>, not %q" .Values.image.digest) }}
{{- end }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The config file: the non-null keys of .Values.config. */}}
{{- define "observer.config" -}}
{{- $c := dict }}
{{- range $k, $v := .Values.config }}
{{- if not (kindIs "invalid" $v) }}
{{- $_ := set $c $k $v }}
{{- end }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* The scrape's scheme, TLS and authorization, for the ServiceMonitor and the PodMonitor. */}}
{{- define "observer.scrapeSecurity" -}}
{{- $m := .Values.metrics }}
{{- if $m.tls.secretName }}
scheme: https
tlsConfig:
  serverName: {{ include "observer.fullname" . }}.{{ .Release.Namespace }}.svc
  ca:
    secret:
      name: {{ $m.tls.secretName }}
      key: ca.crt
{{- end }}
{{- if $m.bearerTokenSecret.name }}
authorization:
  type: Bearer
  credentials:
    name: {{ $m.bearerTokenSecret.name }}
    key: {{ $m.bearerTokenSecret.key }}
{{- end }}
{{- end }}
