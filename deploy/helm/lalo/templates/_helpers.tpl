{{/* Names, labels and the pod pieces every LALO service shares. */}}

{{- define "lalo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "lalo.name" -}}
{{- printf "%s-%s" (include "lalo.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lalo.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lalo.labels" -}}
{{ include "lalo.selectorLabels" . }}
app.kubernetes.io/part-of: lalo
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "lalo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lalo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lalo.secretName" -}}
{{- default (printf "%s-secrets" (include "lalo.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Image reference: registry prefix + repository + (service tag | global tag | appVersion). */}}
{{- define "lalo.image" -}}
{{- $tag := .svc.image.tag | default .root.Values.global.imageTag | default .root.Chart.AppVersion -}}
{{- printf "%s%s:%s" .root.Values.global.imageRegistry .svc.image.repository $tag -}}
{{- end -}}

{{/* An environment variable read from the LALO Secret. */}}
{{- define "lalo.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "lalo.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Settings every LALO container gets: environment, logging, the internal credential. */}}
{{- define "lalo.commonEnv" -}}
- name: {{ printf "LALO_%s_ENVIRONMENT" .prefix }}
  value: {{ .root.Values.global.environment | quote }}
- name: {{ printf "LALO_%s_LOG_LEVEL" .prefix }}
  value: {{ .root.Values.global.logLevel | quote }}
- name: {{ printf "LALO_%s_LOG_JSON" .prefix }}
  value: {{ .root.Values.global.logJson | quote }}
{{ include "lalo.secretEnv" (dict "root" .root "name" "LALO_SERVICE_TOKEN" "key" "service-token") }}
{{- range $name, $value := .svc.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "lalo.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "lalo.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* Scheduling and identity shared by every pod template. */}}
{{- define "lalo.podCommon" -}}
serviceAccountName: {{ include "lalo.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "lalo.podSecurityContext" .root | nindent 2 }}
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "lalo.podMetadata" -}}
labels:
  {{- include "lalo.selectorLabels" . | nindent 2 }}
  app.kubernetes.io/part-of: lalo
  {{- with .extraLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .root.Values.global.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (.annotations | default dict) .root.Values.global.podAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* HorizontalPodAutoscaler on CPU for one Deployment. */}}
{{- define "lalo.hpa" -}}
{{- if .svc.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "lalo.name" . }}
  labels:
    {{- include "lalo.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "lalo.name" . }}
  minReplicas: {{ .svc.autoscaling.minReplicas }}
  maxReplicas: {{ .svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .svc.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{/* PodDisruptionBudget: maxUnavailable keeps single-replica services drainable. */}}
{{- define "lalo.pdb" -}}
{{- if .svc.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "lalo.name" . }}
  labels:
    {{- include "lalo.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .svc.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "lalo.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy admitting traffic to one component only from the listed caller components of
the same release, on the listed ports. `callers` empty = no ingress at all.
*/}}
{{- define "lalo.networkPolicy" -}}
{{- if .root.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "lalo.name" . }}
  labels:
    {{- include "lalo.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "lalo.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress"]
  {{- $root := .root }}
  {{- $ports := .ports }}
  {{- $callers := list }}
  {{- range .callers }}
  {{- if (index $root.Values . "enabled") }}
  {{- $callers = append $callers . }}
  {{- end }}
  {{- end }}
  {{- if $callers }}
  ingress:
    {{- range $callers }}
    - from:
        - podSelector:
            matchLabels:
              {{- include "lalo.selectorLabels" (dict "root" $root "component" (include "lalo.componentName" .)) | nindent 14 }}
      ports:
        {{- range $ports }}
        - protocol: TCP
          port: {{ . }}
        {{- end }}
    {{- end }}
  {{- else }}
  ingress: []
  {{- end }}
{{- end }}
{{- end -}}

{{/* values key (inferenceSmall) -> component name (inference-small). */}}
{{- define "lalo.componentName" -}}
{{- . | kebabcase -}}
{{- end -}}

{{/* The volumes every LALO pod mounts for a read-only root filesystem. */}}
{{- define "lalo.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}
{{- define "lalo.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Fail early with a clear message when the Secret cannot be complete. */}}
{{- define "lalo.validate" -}}
{{- if not .Values.secrets.existingSecret -}}
{{- if not .Values.secrets.serviceToken -}}
{{- fail "secrets.serviceToken is required (or set secrets.existingSecret): see docs/deploy.md" -}}
{{- end -}}
{{- if and .Values.gateway.enabled (not .Values.externalDatabase.gatewayUrl) -}}
{{- fail "externalDatabase.gatewayUrl is required (or set secrets.existingSecret): see docs/deploy.md" -}}
{{- end -}}
{{- if and .Values.orchestrator.enabled (not (or .Values.externalDatabase.orchestratorUrl .Values.externalDatabase.gatewayUrl)) -}}
{{- fail "externalDatabase.orchestratorUrl is required for the orchestrator (or set secrets.existingSecret)" -}}
{{- end -}}
{{- if and .Values.orchestrator.enabled (not .Values.externalRedis.url) -}}
{{- fail "externalRedis.url is required for the orchestrator (or set secrets.existingSecret)" -}}
{{- end -}}
{{- end -}}
{{- /* Every single-node vLLM instance: the text model (unless a LeaderWorkerSet) and the
embedding model. */ -}}
{{- range $key := list "inferenceLarge" "inferenceLargeEmbedding" }}
{{- $svc := index $.Values $key }}
{{- $lws := false }}
{{- with $svc.leaderWorkerSet }}{{ $lws = .enabled }}{{ end }}
{{- if and $svc.enabled (not $lws) -}}
{{- $need := mul (int $svc.tensorParallelSize) (int $svc.pipelineParallelSize) -}}
{{- if ne (int $svc.gpusPerPod) $need -}}
{{- fail (printf "%s.gpusPerPod (%d) must equal tensorParallelSize x pipelineParallelSize (%d) on a single node" $key (int $svc.gpusPerPod) $need) -}}
{{- end -}}
{{- end -}}
{{- end }}
{{- if and .Values.inferenceLarge.enabled .Values.inferenceLarge.leaderWorkerSet.enabled -}}
{{- $need := mul (int .Values.inferenceLarge.tensorParallelSize) (int .Values.inferenceLarge.pipelineParallelSize) -}}
{{- $have := mul (int .Values.inferenceLarge.gpusPerPod) (int .Values.inferenceLarge.leaderWorkerSet.size) -}}
{{- if ne $have $need -}}
{{- fail (printf "inferenceLarge: gpusPerPod x leaderWorkerSet.size (%d) must equal tensorParallelSize x pipelineParallelSize (%d)" $have $need) -}}
{{- end -}}
{{- end -}}
{{- end -}}
