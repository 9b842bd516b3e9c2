{{/* Chart name, truncated for label values. */}}
{{- define "tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name. RayService names must stay <= 53 chars ("-serve-svc" suffix). */}}
{{- define "tts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tts.labels" -}}
helm.sh/chart: {{ include "tts.chart" . }}
{{ include "tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tts
tts.example.com/role: {{ .Values.role }}
{{- end -}}

{{/* Pod-template labels: no chart/app version, so a chart upgrade alone never changes rayClusterConfig
(any change there makes KubeRay build a whole new Ray cluster). */}}
{{- define "tts.podLabels" -}}
{{ include "tts.selectorLabels" . }}
app.kubernetes.io/part-of: tts
tts.example.com/role: {{ .Values.role }}
{{- end -}}

{{/* Labels on every Ray pod of this release (NetworkPolicy, PodMonitor and spread constraints select them). */}}
{{- define "tts.rayPodSelector" -}}
{{ include "tts.selectorLabels" . }}
app.kubernetes.io/component: ray
{{- end -}}

{{- define "tts.gatewaySelector" -}}
{{ include "tts.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "tts.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "tts.apiKeySecretName" -}}
{{- default (printf "%s-api-keys" (include "tts.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "tts.modelClaimName" -}}
{{- .Values.model.pvc.claimName -}}
{{- end -}}

{{/*
serveConfigV2: the shared Serve config file (.Values.serve.configFile, the same file `make run` uses) with
Kubernetes overrides: proxy location, http options, app args and per-deployment values deep-merged by name.
*/}}
{{- define "tts.serveConfig" -}}
{{- $raw := .Files.Get .Values.serve.configFile -}}
{{- if not $raw -}}
{{- fail (printf "serve.configFile %q is missing or empty in the chart" .Values.serve.configFile) -}}
{{- end -}}
{{- $src := $raw | fromYaml -}}
{{- if hasKey $src "Error" -}}
{{- fail (printf "serve.configFile %q is not valid YAML: %s" .Values.serve.configFile $src.Error) -}}
{{- end -}}
{{- if not $src.applications -}}
{{- fail (printf "serve.configFile %q has no applications" .Values.serve.configFile) -}}
{{- end -}}
{{- $cfg := deepCopy $src -}}
{{- $_ := set $cfg "proxy_location" .Values.serve.proxyLocation -}}
{{- $_ := set $cfg "http_options" (mergeOverwrite (deepCopy (default dict $src.http_options)) (deepCopy .Values.serve.httpOptions)) -}}
{{- $known := dict -}}
{{- $apps := list -}}
{{- range $app := $src.applications -}}
{{- $newApp := deepCopy $app -}}
{{- $_ := set $newApp "args" (mergeOverwrite (deepCopy (default dict $app.args)) (deepCopy $.Values.serve.appArgs)) -}}
{{- $deps := list -}}
{{- range $d := $app.deployments -}}
{{- $_ := set $known $d.name true -}}
{{- $override := deepCopy (default dict (get $.Values.serve.deployments $d.name)) -}}
{{- $deps = append $deps (mergeOverwrite (deepCopy $d) $override) -}}
{{- end -}}
{{- $_ := set $newApp "deployments" $deps -}}
{{- $apps = append $apps $newApp -}}
{{- end -}}
{{- range $name, $_ := .Values.serve.deployments -}}
{{- if not (hasKey $known $name) -}}
{{- fail (printf "serve.deployments.%s: no deployment of that name in %s" $name $.Values.serve.configFile) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "applications" $apps -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Container ports of every Ray node (names are what KubeRay and the PodMonitor look for). */}}
{{- define "tts.rayPorts" -}}
- {name: serve, containerPort: 8000, protocol: TCP}
- {name: metrics, containerPort: 8080, protocol: TCP}
- {name: dashboard-agent, containerPort: 52365, protocol: TCP}
{{- end -}}

{{- define "tts.rayEnv" -}}
- name: TTS_MODEL_DIR
  value: {{ .Values.serve.appArgs.model_dir | quote }}
- name: HOME
  value: /tmp
- name: RAY_SERVE_HTTP_KEEP_ALIVE_TIMEOUT_S
  value: "75"
{{- /* serve_app/ray_system.py RAY_SYSTEM_CONFIG (tested equal): vocoder state inline in calls, not via the object store */}}
- name: RAY_max_direct_call_object_size
  value: "1048576"
{{- /* serve_app/ray_system.py SERVE_ENV (tested equal): the Serve controller's loop 2x a second, not 10x */}}
- name: RAY_SERVE_CONTROL_LOOP_INTERVAL_S
  value: "0.5"
{{- if .Values.apiKeys.enabled }}
- name: TTS_AUTH_ENABLED
  value: "1"
- name: {{ .Values.apiKeys.envVar }}
  valueFrom:
    secretKeyRef: {name: {{ include "tts.apiKeySecretName" . }}, key: api-keys}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tts.rayVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 4Gi}
{{- if eq .Values.model.source "pvc" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "tts.modelClaimName" . }}
    readOnly: true
{{- else if eq .Values.model.source "download" }}
- name: models
  emptyDir: {sizeLimit: {{ .Values.model.download.sizeLimit }}}
{{- end }}
{{- end -}}

{{- define "tts.rayVolumeMounts" -}}
- {name: tmp, mountPath: /tmp}
{{- if ne .Values.model.source "image" }}
- {name: models, mountPath: /models, readOnly: true}
{{- end }}
{{- end -}}

{{- define "tts.initContainers" -}}
{{- if eq .Values.model.source "download" }}
- name: fetch-model
  image: {{ include "tts.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: {{ toJson .Values.model.download.command }}
  env: [{name: HOME, value: /tmp}]
  securityContext: {{ toJson .Values.containerSecurityContext }}
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "1", memory: 2Gi}}
  volumeMounts:
    - {name: models, mountPath: /models}
    - {name: tmp, mountPath: /tmp}
{{- end }}
{{- if .Values.doctorInitContainer }}
- name: doctor
  image: {{ include "tts.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["python", "-m", "compat", "doctor"]
  env:
    - name: TTS_MODEL_DIR
      value: {{ .Values.serve.appArgs.model_dir | quote }}
    - {name: HOME, value: /tmp}
  securityContext: {{ toJson .Values.containerSecurityContext }}
  resources: {requests: {cpu: 250m, memory: 512Mi}, limits: {cpu: "1", memory: 1Gi}}
  volumeMounts:
{{ include "tts.rayVolumeMounts" . | indent 4 }}
{{- end }}
{{- end -}}

{{/* KubeRay-equivalent health commands (wget is in the image). */}}
{{- define "tts.wget" -}}
wget --tries 1 -T {{ .timeout }} -q -O- http://localhost:{{ .port }}/{{ .path }} | grep success
{{- end -}}
