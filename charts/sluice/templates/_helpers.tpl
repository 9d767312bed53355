{{/*
Names, labels and small pieces shared by the templates. The names of sluice.yaml's keys
and of the SLUICE_* variables live in configmap.yaml, not here.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name for objects: fullnameOverride, else <release>-sluice
(just <release> when it already contains the chart's name). At most 40 characters, so
that suffixes such as "-worker-<pool>" still fit in 63. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "api"). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The sluice image reference. */}}
{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Service accounts. */}}
{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.workerServiceAccountName" -}}
{{- if .Values.workers.serviceAccount.create }}
{{- default (printf "%s-worker" (include "sluice.fullname" .)) .Values.workers.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.workers.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.stepServiceAccountName" -}}
{{- if .Values.kubernetes.stepServiceAccount.create }}
{{- default (printf "%s-step" (include "sluice.fullname" .)) .Values.kubernetes.stepServiceAccount.name }}
{{- else }}
{{- default "default" .Values.kubernetes.stepServiceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace step pods run in. */}}
{{- define "sluice.stepNamespace" -}}
{{- default .Release.Namespace .Values.kubernetes.namespace }}
{{- end }}

{{/* Object names. */}}
{{- define "sluice.configMapName" -}}{{ include "sluice.fullname" . }}-config{{- end }}
{{- define "sluice.apiServiceName" -}}{{ include "sluice.fullname" . }}-api{{- end }}
{{- define "sluice.bundledSecretName" -}}{{ include "sluice.fullname" . }}-bundled{{- end }}
{{- define "sluice.postgresqlName" -}}{{ include "sluice.fullname" . }}-postgresql{{- end }}
{{- define "sluice.redisName" -}}{{ include "sluice.fullname" . }}-redis{{- end }}

{{- define "sluice.logsClaimName" -}}
{{- default (printf "%s-logs" (include "sluice.fullname" .)) .Values.persistence.logs.existingClaim }}
{{- end }}
{{- define "sluice.artifactsClaimName" -}}
{{- default (printf "%s-artifacts" (include "sluice.fullname" .)) .Values.persistence.artifacts.existingClaim }}
{{- end }}

{{/* Whether the artifacts volume exists: artifacts on the shared filesystem. */}}
{{- define "sluice.artifactsOnVolume" -}}
{{- if eq .Values.artifacts.type "fs" }}true{{ end }}
{{- end }}

{{/* The executor of a pool: include with (dict "ctx" $ "pool" $pool). */}}
{{- define "sluice.poolExecutor" -}}
{{- default .ctx.Values.workers.executor .pool.executor }}
{{- end }}

{{/* The two security contexts, ready to indent. */}}
{{- define "sluice.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
{{- define "sluice.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Annotations that roll the pods when sluice.yaml changes, plus scrape hints. */}}
{{- define "sluice.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/* Volumes every sluice pod has: the config file, /tmp. */}}
{{- define "sluice.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "sluice.configMapName" . }}
- name: tmp
  emptyDir: {}
{{- end }}
{{- define "sluice.commonVolumeMounts" -}}
- name: config
  mountPath: {{ .Values.paths.config }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The default spreading of a component's replicas over nodes (soft). */}}
{{- define "sluice.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sluice.selectorLabels" . | nindent 12 }}
{{- end }}

{{/* "true" when some pool runs steps as pods (the executor's RBAC is then needed). */}}
{{- define "sluice.usesKubernetes" -}}
{{- range include "sluice.pools" . | fromJsonArray }}
{{- if eq (default $.Values.workers.executor .executor) "kubernetes" }}true{{ end }}
{{- end }}
{{- end }}

{{/* The DAG sources' volumes (scheduler only): the Git credentials' files, or the DAG
ConfigMap. Each renders nothing when unused. */}}
{{- define "sluice.dagsVolumes" -}}
{{- $g := .Values.secrets.git }}
{{- if and .Values.git.url $g.existingSecret (or $g.sshKeyKey $g.knownHostsKey) }}
{{- include "sluice.gitCredentialsVolumes" . }}
{{- else if and (not .Values.git.url) .Values.dags.existingConfigMap }}
- name: dags
  configMap:
    name: {{ .Values.dags.existingConfigMap | quote }}
{{- end }}
{{- end }}
{{- define "sluice.dagsVolumeMounts" -}}
{{- $g := .Values.secrets.git }}
{{- if and .Values.git.url $g.existingSecret (or $g.sshKeyKey $g.knownHostsKey) }}
{{- include "sluice.gitCredentialsVolumeMounts" . }}
{{- else if and (not .Values.git.url) .Values.dags.existingConfigMap }}
- name: dags
  mountPath: {{ .Values.paths.dags }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The Git credentials' files (scheduler, and workers for `from: git` inputs of local
steps); nothing when unused. */}}
{{- define "sluice.gitCredentialsVolumes" -}}
{{- $g := .Values.secrets.git }}
{{- if and .Values.git.url $g.existingSecret (or $g.sshKeyKey $g.knownHostsKey) }}
- name: git-credentials
  secret:
    secretName: {{ $g.existingSecret | quote }}
    defaultMode: 0440
    items:
      {{- with $g.sshKeyKey }}
      - key: {{ . | quote }}
        path: ssh_key
      {{- end }}
      {{- with $g.knownHostsKey }}
      - key: {{ . | quote }}
        path: known_hosts
      {{- end }}
{{- end }}
{{- end }}
{{- define "sluice.gitCredentialsVolumeMounts" -}}
{{- $g := .Values.secrets.git }}
{{- if and .Values.git.url $g.existingSecret (or $g.sshKeyKey $g.knownHostsKey) }}
- name: git-credentials
  mountPath: {{ .Values.paths.gitCredentials }}
  readOnly: true
{{- end }}
{{- end }}

{{/* workers.pools with every field defaulted (a values file replaces the whole list, so
its entries may leave fields out), as JSON: range over (include "sluice.pools" . | fromJsonArray).
Also refuses what the schema cannot express: duplicate names or queues, min > max. */}}
{{- define "sluice.pools" -}}
{{- $out := list }}
{{- $names := dict }}
{{- $queues := dict }}
{{- range $i, $p := .Values.workers.pools }}
{{- $d := dict "replicas" 1 "slots" 4 "gpus" 0 "gpuResourceName" "" "executor" "" "resources" (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "memory" "512Mi")) "nodeSelector" dict "tolerations" list "affinity" dict "extraEnv" list "autoscaling" (dict "enabled" false "minReplicas" 1 "maxReplicas" 10) }}
{{- $pool := mustMergeOverwrite $d (deepCopy $p) }}
{{- if hasKey $p "resources" }}
{{- /* Resources given are taken whole: a default limit under a request would be invalid. */}}
{{- $_ := set $pool "resources" (deepCopy (default dict $p.resources)) }}
{{- end }}
{{- if hasKey $names $pool.name }}
{{- fail (printf "workers.pools[%d]: the name %q is used by another pool" $i $pool.name) }}
{{- end }}
{{- if hasKey $queues $pool.queue }}
{{- fail (printf "workers.pools[%d]: the queue %q is served by another pool; give one pool more replicas instead" $i $pool.queue) }}
{{- end }}
{{- if gt (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas) }}
{{- fail (printf "workers.pools[%d] (%s): autoscaling.minReplicas %d exceeds maxReplicas %d" $i $pool.name (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas)) }}
{{- end }}
{{- $_ := set $names $pool.name true }}
{{- $_ := set $queues $pool.queue true }}
{{- $out = append $out $pool }}
{{- end }}
{{- toJson $out }}
{{- end }}
