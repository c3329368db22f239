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
