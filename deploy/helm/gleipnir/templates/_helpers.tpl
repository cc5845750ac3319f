{{/* The chart's name, and the release's full name (the objects' names). */}}
{{- define "gleipnir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gleipnir.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gleipnir.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gleipnir.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gleipnir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gleipnir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sts
{{- end -}}

{{- define "gleipnir.labels" -}}
{{ include "gleipnir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "gleipnir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gleipnir.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gleipnir.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The environment variable holding a client's secret: GLEIPNIR_SECRET_<ID>. */}}
{{- define "gleipnir.secretEnv" -}}
{{- printf "GLEIPNIR_SECRET_%s" (regexReplaceAll "[^A-Z0-9]" (upper .) "_") -}}
{{- end -}}

{{/* Where the signing key Secret is mounted. */}}
{{- define "gleipnir.keyMount" -}}/var/run/secrets/gleipnir{{- end -}}

{{/*
The configuration as a dict: .Values.config plus what the chart decides (issuer,
listeners, signing key location, policy directory, clients with their secret variables).
*/}}
{{- define "gleipnir.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "issuer" (required "issuer is required" .Values.issuer) -}}
{{- $server := default dict (get $config "server") -}}
{{- $_ := set $server "listen" (printf "0.0.0.0:%v" .Values.ports.http) -}}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%v" .Values.ports.admin) -}}
{{- $_ := set $config "server" $server -}}
{{- $signing := dict "algorithm" .Values.signingKey.algorithm -}}
{{- if .Values.signingKey.keyDir -}}
{{- $_ := set $signing "key_dir" (include "gleipnir.keyMount" .) -}}
{{- else -}}
{{- $_ := set $signing "key_file" (printf "%s/%s" (include "gleipnir.keyMount" .) .Values.signingKey.key) -}}
{{- end -}}
{{- $_ := set $config "signing" $signing -}}
{{- $_ := set $config "policy" (dict "dir" "policies") -}}
{{- $clients := list -}}
{{- $envs := dict -}}
{{- range .Values.clients -}}
{{- $env := include "gleipnir.secretEnv" (required "clients[].id is required" .id) -}}
{{- if hasKey $envs $env -}}
{{- fail (printf "clients %s and %s would share the variable %s" (get $envs $env) .id $env) -}}
{{- end -}}
{{- $_ := set $envs $env .id -}}
{{- $client := deepCopy . -}}
{{- $_ := set $client "secret" (dict "env" $env) -}}
{{- $clients = append $clients $client -}}
{{- end -}}
{{- $_ := set $config "clients" $clients -}}
{{- toJson $config -}}
{{- end -}}

{{/*
TOML of a table, from (list PREFIX DICT): its keys with scalar or scalar-array values
first, as JSON (which TOML reads the same for strings, numbers, booleans and arrays of
them; Helm's toToml writes every number as a float), then its tables, then its arrays of
tables.
*/}}
{{- define "gleipnir.toml" -}}
{{- $prefix := index . 0 -}}
{{- $table := index . 1 -}}
{{- range $key, $value := $table -}}
{{- $tables := and (kindIs "slice" $value) $value (kindIs "map" (first $value)) -}}
{{- if not (or (kindIs "map" $value) $tables) }}
{{ include "gleipnir.tomlKey" $key }} = {{ toJson $value }}
{{- end -}}
{{- end -}}
{{- range $key, $value := $table -}}
{{- $name := include "gleipnir.tomlKey" $key -}}
{{- if $prefix -}}{{- $name = printf "%s.%s" $prefix $name -}}{{- end -}}
{{- if kindIs "map" $value }}

[{{ $name }}]
{{- include "gleipnir.toml" (list $name $value) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $table -}}
{{- $name := include "gleipnir.tomlKey" $key -}}
{{- if $prefix -}}{{- $name = printf "%s.%s" $prefix $name -}}{{- end -}}
{{- if and (kindIs "slice" $value) $value (kindIs "map" (first $value)) -}}
{{- range $item := $value }}

[[{{ $name }}]]
{{- include "gleipnir.toml" (list $name $item) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gleipnir.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* The configuration file's text. */}}
{{- define "gleipnir.configText" -}}
# Rendered by the gleipnir Helm chart from its values (README.md, configuration reference).
{{- include "gleipnir.toml" (list "" (include "gleipnir.config" . | fromJson)) }}
{{ end -}}
