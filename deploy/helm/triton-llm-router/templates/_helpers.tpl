{{/* Prefix of every object name: the release name unless fullnameOverride says otherwise. */}}
{{- define "llmr.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "llmr.labels" -}}
app.kubernetes.io/name: triton-llm-router
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: triton-llm-router
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: call with (list $ "router"). */}}
{{- define "llmr.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: triton-llm-router
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The routing policy as YAML: policy.override, else the repository's policy (files/policy.yaml). */}}
{{- define "llmr.policySource" -}}
{{- if .Values.policy.override -}}
{{ toYaml .Values.policy.override }}
{{- else -}}
{{ .Files.Get "files/policy.yaml" }}
{{- end -}}
{{- end -}}

{{/* DNS-1123 name of a tier's Deployment and Service: call with (list $ "tier_small"). */}}
{{- define "llmr.tierName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "llmr.fullname" $root) (index . 1 | lower | replace "_" "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The tiers this chart deploys as pools (split layout): every policy tier without a `remote` block of its own, with
its settings (tierDefaults merged with tiers.<name>). Returns a JSON list of {name, svc, model, settings}.
*/}}
{{- define "llmr.pools" -}}
{{- $policy := include "llmr.policySource" . | fromYaml -}}
{{- $pools := list -}}
{{- range $policy.tiers -}}
{{- if not .remote -}}
{{- $settings := mergeOverwrite (deepCopy $.Values.tierDefaults) (deepCopy (get $.Values.tiers .name | default dict)) -}}
{{- $model := $settings.model | default (ternary "ensemble" .name (eq $settings.backend "trtllm")) -}}
{{- $svc := include "llmr.tierName" (list $ .name) -}}
{{- $pools = append $pools (dict "name" .name "svc" $svc "model" $model "settings" $settings) -}}
{{- end -}}
{{- end -}}
{{- toJson $pools -}}
{{- end -}}

{{/*
The policy the router loads. split: each deployed tier gets a remote block that points at its headless Service
(gRPC 8001); all-in-one: the policy as it is (every tier local).
*/}}
{{- define "llmr.policy" -}}
{{- $policy := include "llmr.policySource" . | fromYaml -}}
{{- if eq .Values.layout "split" -}}
{{- $tiers := list -}}
{{- $pools := include "llmr.pools" . | fromJsonArray -}}
{{- range $policy.tiers -}}
{{- $tier := deepCopy . -}}
{{- range $pools -}}
{{- if eq .name $tier.name -}}
{{- $url := printf "%s.%s.svc.cluster.local:8001" .svc $.Release.Namespace -}}
{{- $_ := set $tier "remote" (dict "kind" "triton" "url" $url "model" .model) -}}
{{- end -}}
{{- end -}}
{{- $tiers = append $tiers $tier -}}
{{- end -}}
{{- $_ := set $policy "tiers" $tiers -}}
{{- end -}}
{{- toYaml $policy -}}
{{- end -}}

{{- define "llmr.secretName" -}}
{{- default (printf "%s-api-keys" (include "llmr.fullname" .)) .Values.apiKeys.secretName -}}
{{- end -}}

{{/* Triton container ports, named so that probes, Services and the PodMonitor refer to them by name. */}}
{{- define "llmr.tritonPorts" -}}
- {name: http, containerPort: 8000, protocol: TCP}
- {name: grpc, containerPort: 8001, protocol: TCP}
- {name: metrics, containerPort: 8002, protocol: TCP}
{{- end -}}

{{/* Probes of a Triton container: startup allows model loading; readiness and liveness are Triton's own. */}}
{{- define "llmr.tritonProbes" -}}
startupProbe:
  httpGet: {path: /v2/health/ready, port: http}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
readinessProbe:
  httpGet: {path: /v2/health/ready, port: http}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet: {path: /v2/health/live, port: http}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- end -}}

{{/* router-serve's command line (the docker compose `triton` service's), loading `models` ("*": all). */}}
{{- define "llmr.routerServe" -}}
{{- $root := index . 0 -}}
- router-serve
- --triton-home=/opt/tritonserver
- --host=0.0.0.0
- --http-port=8000
- --grpc-port=8001
- --metrics-port=8002
{{- if $root.Values.modelRepository.uri }}
- --model-repository={{ $root.Values.modelRepository.uri }}
{{- else }}
- --model-repository={{ $root.Values.modelRepository.mountPath }}
{{- end }}
- --model-control-mode=explicit
{{- range index . 1 }}
- --load-model={{ . }}
{{- end }}
- --on-stub-exit=restart
- --startup-timeout=1800
- --stop-grace=50
- --triton-arg=--strict-readiness=true
- --triton-arg=--allow-gpu-metrics=true
{{- end -}}

{{/* Volumes of a Triton pod: the repository, the policy, /dev/shm, /tmp and the TensorRT cache. */}}
{{- define "llmr.volumes" -}}
{{- $root := index . 0 -}}
{{- if not $root.Values.modelRepository.uri }}
- name: models
  persistentVolumeClaim:
    claimName: {{ $root.Values.modelRepository.existingClaim | default (printf "%s-models" (include "llmr.fullname" $root)) }}
    readOnly: true
{{- end }}
{{- if index . 1 }}
- name: policy
  configMap:
    name: {{ include "llmr.fullname" $root }}-config
    items:
      - {key: policy.yaml, path: policy.yaml}
{{- end }}
- name: dshm
  emptyDir: {medium: Memory, sizeLimit: {{ $root.Values.shmSizeLimit }}}
- name: tmp
  emptyDir: {}
- name: trt-cache
  emptyDir: {}
{{- if and (index . 1) $root.Values.outcomeRecords.enabled }}
- name: records
  {{- toYaml $root.Values.outcomeRecords.volume | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "llmr.volumeMounts" -}}
{{- $root := index . 0 -}}
{{- if not $root.Values.modelRepository.uri }}
- name: models
  mountPath: {{ $root.Values.modelRepository.mountPath }}
  readOnly: true
{{- with $root.Values.modelRepository.subPath }}
  subPath: {{ . }}
{{- end }}
{{- if index . 1 }}
- name: policy
  mountPath: {{ printf "%s/router/%v/policy.yaml" $root.Values.modelRepository.mountPath $root.Values.policy.version }}
  subPath: policy.yaml
  readOnly: true
{{- end }}
{{- end }}
- {name: dshm, mountPath: /dev/shm}
- {name: tmp, mountPath: /tmp}
- {name: trt-cache, mountPath: /trt_cache}
{{- if and (index . 1) $root.Values.outcomeRecords.enabled }}
- {name: records, mountPath: /records}
{{- end }}
{{- end -}}

{{/* Resources with the GPU limit (nvidia.com/gpu, GPU Operator / device plugin) when gpus > 0. */}}
{{- define "llmr.resources" -}}
{{- $res := deepCopy (index . 0) -}}
{{- $gpus := int (index . 1) -}}
{{- if gt $gpus 0 -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $limits "nvidia.com/gpu" $gpus -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Pod-level settings shared by the Triton Deployments. */}}
{{- define "llmr.podSpecCommon" -}}
{{- $root := . -}}
serviceAccountName: {{ include "llmr.fullname" $root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment of a Triton container: HOME on the writable /tmp, API keys from the Secret. */}}
{{- define "llmr.tritonEnv" -}}
env:
  - {name: HOME, value: /tmp}
  - name: ROUTER_GRPC_LB_POLICY
    valueFrom:
      configMapKeyRef: {name: {{ include "llmr.fullname" . }}-config, key: ROUTER_GRPC_LB_POLICY}
{{- if .Values.outcomeRecords.enabled }}
  - {name: LLM_ROUTER_OUTCOME_RECORDS_DIR, value: /records}
  - {name: LLM_ROUTER_OUTCOME_RECORDS_PROMPTS, value: {{ .Values.outcomeRecords.storePrompts | quote }}}
{{- end }}
envFrom:
  - secretRef: {name: {{ include "llmr.secretName" . }}, optional: true}
{{- end -}}
