{{/* Pod pieces of inference-large, shared by its Deployment and LeaderWorkerSet pods and by
its embedding instance; each takes the component's context (dict "root" "component" "svc"). */}}

{{- define "lalo.inferenceLarge.volumes" -}}
{{- $svc := .svc -}}
# Ray keeps its session files and logs under /tmp.
- name: tmp
  emptyDir:
    sizeLimit: 10Gi
- name: cache
  emptyDir:
    sizeLimit: 20Gi
# NCCL and PyTorch share tensors through /dev/shm; the container default (64 MiB) is too small.
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $svc.shmSize }}
- name: models
  persistentVolumeClaim:
    claimName: {{ $svc.modelCache.existingClaim | default (printf "%s-models" (include "lalo.name" .)) }}
- name: fetch
  configMap:
    name: {{ printf "%s-models" (include "lalo.name" .) }}
{{- end -}}

{{- define "lalo.inferenceLarge.mounts" -}}
{{- include "lalo.scratchMounts" .root }}
- name: cache
  mountPath: /home/lalo/.cache
- name: dshm
  mountPath: /dev/shm
- name: models
  mountPath: /models
{{- end -}}

{{- define "lalo.inferenceLarge.env" -}}
- name: HF_HUB_OFFLINE
  value: "1"
- name: HF_HOME
  value: /home/lalo/.cache/huggingface
- name: XDG_CACHE_HOME
  value: /home/lalo/.cache
- name: TRITON_CACHE_DIR
  value: /home/lalo/.cache/triton
- name: VLLM_CACHE_ROOT
  value: /home/lalo/.cache/vllm
- name: VLLM_NO_USAGE_STATS
  value: "1"
{{- end -}}

{{- define "lalo.inferenceLarge.fetchInit" -}}
{{- $svc := .svc -}}
{{- $root := .root -}}
# Downloads the model onto the cache volume and verifies every file against the sha256 the
# hub publishes for the resolved commit (or the pins in values) before vLLM loads it.
- name: fetch-models
  image: {{ include "lalo.image" . }}
  imagePullPolicy: {{ $root.Values.global.imagePullPolicy }}
  command: ["python", "/usr/local/bin/lalo-fetch-models", "--catalog", "/etc/lalo/models/fetch.yaml", "--dest", "/models"]
  env:
    {{- include "lalo.secretEnv" (dict "root" $root "name" "HF_TOKEN" "key" "hf-token" "optional" true) | nindent 4 }}
  securityContext:
    {{- include "lalo.containerSecurityContext" $root | nindent 4 }}
  resources:
    {{- toYaml $svc.modelFetch.resources | nindent 4 }}
  volumeMounts:
    {{- include "lalo.scratchMounts" $root | nindent 4 }}
    - name: models
      mountPath: /models
    - name: fetch
      mountPath: /etc/lalo/models
      readOnly: true
{{- end -}}

{{- define "lalo.inferenceLarge.server" -}}
{{- $root := .ctx.root }}
{{- $svc := .ctx.svc }}
{{- $lws := and $svc.leaderWorkerSet $svc.leaderWorkerSet.enabled -}}
- name: inference-large
  image: {{ .image }}
  imagePullPolicy: {{ $root.Values.global.imagePullPolicy }}
  {{- if $lws }}
  # Start the Ray head for the group, then the server (vLLM uses the Ray executor).
  command: ["sh", "-c", "ray start --head --port={{ $svc.leaderWorkerSet.rayPort }} && exec lalo-inference-large"]
  {{- end }}
  ports:
    - name: grpc
      containerPort: {{ $svc.port }}
      protocol: TCP
  env:
    {{- include "lalo.commonEnv" (dict "root" $root "prefix" "INFERENCE_LARGE" "svc" $svc) | nindent 4 }}
    {{- include "lalo.inferenceLarge.env" . | nindent 4 }}
    - name: LALO_INFERENCE_LARGE_LISTEN_ADDRESS
      value: {{ printf "0.0.0.0:%d" (int $svc.port) | quote }}
    - name: LALO_INFERENCE_LARGE_MODEL
      value: {{ printf "/models/%s" $svc.model.id | quote }}
    - name: LALO_INFERENCE_LARGE_SERVED_MODEL_NAME
      value: {{ $svc.model.id | quote }}
    - name: LALO_INFERENCE_LARGE_TENSOR_PARALLEL_SIZE
      value: {{ $svc.tensorParallelSize | quote }}
    - name: LALO_INFERENCE_LARGE_PIPELINE_PARALLEL_SIZE
      value: {{ $svc.pipelineParallelSize | quote }}
    - name: LALO_INFERENCE_LARGE_MAX_MODEL_LEN
      value: {{ $svc.maxModelLen | quote }}
    - name: LALO_INFERENCE_LARGE_GPU_MEMORY_UTILIZATION
      value: {{ $svc.gpuMemoryUtilization | quote }}
    {{- with $svc.runner }}
    - name: LALO_INFERENCE_LARGE_RUNNER
      value: {{ . | quote }}
    {{- end }}
    {{- if $lws }}
    - name: LALO_INFERENCE_LARGE_DISTRIBUTED_EXECUTOR_BACKEND
      value: ray
    {{- end }}
  startupProbe:
    grpc:
      port: {{ $svc.port }}
    periodSeconds: {{ $svc.startupProbe.periodSeconds }}
    failureThreshold: {{ $svc.startupProbe.failureThreshold }}
  livenessProbe:
    grpc:
      port: {{ $svc.port }}
    periodSeconds: 30
    timeoutSeconds: 10
    failureThreshold: 3
  readinessProbe:
    grpc:
      port: {{ $svc.port }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  securityContext:
    {{- include "lalo.containerSecurityContext" $root | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    {{- include "lalo.inferenceLarge.mounts" .ctx | nindent 4 }}
{{- end -}}

{{- /* One inference-large instance (context: dict "root" "component" "svc" "callers"): its
model ConfigMap and cache, the Deployment or LeaderWorkerSet, Service, HPA, PDB and
NetworkPolicy admitting only "callers". */ -}}
{{- define "lalo.inferenceLarge.instance" }}
{{- $root := .root }}
{{- $svc := .svc }}
{{- $ctx := dict "root" $root "component" .component "svc" $svc }}
{{- $name := include "lalo.name" $ctx }}
{{- $lws := $svc.leaderWorkerSet.enabled }}
{{- $fetch := dict "id" $svc.model.id "repo" $svc.model.repo "revision" ($svc.model.revision | default "main") "allow_patterns" $svc.model.allowPatterns }}
{{- with $svc.model.sha256 }}
{{- $_ := set $fetch "sha256" . }}
{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-models" $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
data:
  fetch.yaml: |
    {{- toYaml (dict "models" (list $fetch)) | nindent 4 }}
{{- if not $svc.modelCache.existingClaim }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ printf "%s-models" $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
  annotations:
    # Hundreds of GB of weights outlive `helm uninstall`; delete the claim by hand.
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml $svc.modelCache.accessModes | nindent 4 }}
  {{- with $svc.modelCache.storageClassName }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $svc.modelCache.size }}
{{- end }}
{{- /* Pieces shared by the Deployment pod and the LeaderWorkerSet leader/worker pods. */}}
{{- $image := include "lalo.image" $ctx }}
{{- $resources := deepCopy $svc.resources }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $svc.gpusPerPod) ($resources.limits | default dict)) }}
{{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" $svc.gpusPerPod) ($resources.requests | default dict)) }}
{{- $serverContainer := include "lalo.inferenceLarge.server" (dict "ctx" $ctx "image" $image "resources" $resources) }}
---
{{- if not $lws }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  # The GPUs of the old pod must be free before the new one can be scheduled.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- include "lalo.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      {{- include "lalo.podMetadata" $ctx | nindent 6 }}
    spec:
      {{- include "lalo.podCommon" $ctx | nindent 6 }}
      terminationGracePeriodSeconds: 60
      {{- if $svc.modelFetch.enabled }}
      initContainers:
        {{- include "lalo.inferenceLarge.fetchInit" $ctx | nindent 8 }}
      {{- end }}
      containers:
        {{- $serverContainer | nindent 8 }}
      volumes:
        {{- include "lalo.inferenceLarge.volumes" $ctx | nindent 8 }}
{{- else }}
# One group = one leader (serves gRPC, drives vLLM) + size-1 workers (Ray), restarted together.
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
metadata:
  name: {{ $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ $svc.replicas }}
  startupPolicy: LeaderCreated
  leaderWorkerTemplate:
    size: {{ $svc.leaderWorkerSet.size }}
    restartPolicy: RecreateGroupOnPodRestart
    leaderTemplate:
      metadata:
        {{- include "lalo.podMetadata" (merge (dict "extraLabels" (dict "lalo.dev/role" "leader")) $ctx) | nindent 8 }}
      spec:
        {{- include "lalo.podCommon" $ctx | nindent 8 }}
        terminationGracePeriodSeconds: 60
        {{- if $svc.modelFetch.enabled }}
        initContainers:
          {{- include "lalo.inferenceLarge.fetchInit" $ctx | nindent 10 }}
        {{- end }}
        containers:
          {{- $serverContainer | nindent 10 }}
        volumes:
          {{- include "lalo.inferenceLarge.volumes" $ctx | nindent 10 }}
    workerTemplate:
      metadata:
        labels:
          app.kubernetes.io/name: {{ $root.Chart.Name }}
          app.kubernetes.io/instance: {{ $root.Release.Name }}
          app.kubernetes.io/component: inference-large-worker
          app.kubernetes.io/part-of: lalo
      spec:
        {{- include "lalo.podCommon" $ctx | nindent 8 }}
        containers:
          - name: ray-worker
            image: {{ $image }}
            imagePullPolicy: {{ $root.Values.global.imagePullPolicy }}
            # Joins the leader's Ray cluster; vLLM places model shards on this node's GPUs.
            command: ["sh", "-c", "exec ray start --address=\"$LWS_LEADER_ADDRESS:{{ $svc.leaderWorkerSet.rayPort }}\" --block"]
            env:
              {{- include "lalo.inferenceLarge.env" $ctx | nindent 14 }}
            securityContext:
              {{- include "lalo.containerSecurityContext" $root | nindent 14 }}
            resources:
              {{- toYaml $resources | nindent 14 }}
            volumeMounts:
              {{- include "lalo.inferenceLarge.mounts" $ctx | nindent 14 }}
        volumes:
          {{- include "lalo.inferenceLarge.volumes" $ctx | nindent 10 }}
{{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "lalo.selectorLabels" $ctx | nindent 4 }}
    {{- if $lws }}
    lalo.dev/role: leader
    {{- end }}
  ports:
    - name: grpc
      port: {{ $svc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- if not $lws }}
{{- include "lalo.hpa" $ctx }}
{{- end }}
{{- include "lalo.pdb" $ctx }}
{{- include "lalo.networkPolicy" (merge (dict "callers" .callers "ports" (list $svc.port)) $ctx) }}
{{- if and $lws $root.Values.networkPolicy.enabled }}
---
# Ray and NCCL traffic inside a LeaderWorkerSet group: leader and workers reach each other
# on any port, nothing else reaches the workers.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ printf "%s-group" $name }}
  labels:
    {{- include "lalo.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      leaderworkerset.sigs.k8s.io/name: {{ $name }}
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              leaderworkerset.sigs.k8s.io/name: {{ $name }}
{{- end }}
{{- end }}
