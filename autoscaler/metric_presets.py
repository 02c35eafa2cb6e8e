"""PromQL presets for the metrics inference servers and exporters really publish. Pure.

Rule: every query groups by the target's namespace and workload labels (`sum by (namespace,
deployment) (...)`), so ONE query serves every target that uses the same preset; the source
splits the result by those two label values. Servers do not label their series with the
Deployment name, so either the scrape adds it (relabeling) or it is derived from the pod name
(`workload_from_pod=True`, Kubernetes pod naming `<deployment>-<template-hash>-<suffix>` or
`<statefulset>-<ordinal>`). GPU utilization comes from the DCGM exporter, whose series name the
GPU's pod, so it is always joined to the target by pod name.

Metric names (checked against each project's documentation/source):
  vLLM               vllm:request_success_total (counter), vllm:num_requests_running/_waiting
  NVIDIA Triton      nv_inference_request_success (counter), nv_inference_queue_duration_us
  Hugging Face TGI   tgi_request_count (counter, all requests), tgi_queue_size (gauge)
  TensorFlow Serving :tensorflow:serving:request_count (counter)
  TorchServe         ts_inference_requests_total (counter)
  KServe / generic   http_requests_total (counter)
  DCGM exporter      DCGM_FI_DEV_GPU_UTIL (gauge, percent 0..100)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Kubernetes' pod-template-hash and generated-name suffix alphabet (no vowels, no 0/1/3).
_K8S_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
POD_NAME_PATTERNS = {
    "Deployment": f"(.+)-{_K8S_SAFE}{{1,10}}-{_K8S_SAFE}{{5}}",
    "StatefulSet": "(.+)-[0-9]+",
}


@dataclass(frozen=True)
class TargetLabels:
    """Which labels name a series' owner in the server's metrics.

    namespace: label holding the namespace (default "namespace").
    workload: label holding the Deployment/StatefulSet name, present or derived (default
        "deployment").
    pod: label holding the pod name, used when the workload is derived (default "pod").
    workload_from_pod: derive `workload` from `pod` with label_replace (default False: the
        scrape already attaches it).
    workload_kind: pod naming scheme to derive from, "Deployment" or "StatefulSet".
    """

    namespace: str = "namespace"
    workload: str = "deployment"
    pod: str = "pod"
    workload_from_pod: bool = False
    workload_kind: Literal["Deployment", "StatefulSet"] = "Deployment"

    @property
    def by(self) -> str:
        return f"{self.namespace}, {self.workload}"


@dataclass(frozen=True)
class GpuLabels:
    """How DCGM exporter series name the pod using the GPU.

    metric: the utilization gauge, percent (default DCGM_FI_DEV_GPU_UTIL).
    namespace/pod: its labels; "exported_namespace"/"exported_pod" when the scrape does not
        honour the exporter's labels (default "namespace"/"pod").
    """

    metric: str = "DCGM_FI_DEV_GPU_UTIL"
    namespace: str = "namespace"
    pod: str = "pod"


@dataclass(frozen=True)
class ServerPreset:
    """One inference server's request counter and its optional extra signals.

    counter: the request counter's metric name.
    extra: named extra signals as PromQL templates with {by}, {w} (rate window) and {m}
        (label matchers) placeholders, grouped like the rate.
    """

    name: str
    counter: str
    extra: tuple[tuple[str, str], ...] = ()


PRESETS: dict[str, ServerPreset] = {
    p.name: p
    for p in (
        ServerPreset(
            "vllm",
            "vllm:request_success_total",
            (
                (
                    "requests_running",
                    "sum by ({by}) ({wrap_open}vllm:num_requests_running{m}{wrap_close})",
                ),
                (
                    "requests_waiting",
                    "sum by ({by}) ({wrap_open}vllm:num_requests_waiting{m}{wrap_close})",
                ),
            ),
        ),
        ServerPreset(
            "triton",
            "nv_inference_request_success",
            (
                # Cumulative queue time over cumulative successes: mean queue wait per request.
                (
                    "queue_wait_s",
                    "sum by ({by}) ({wrap_open}rate(nv_inference_queue_duration_us{m}[{w}]){wrap_close})"
                    " / sum by ({by}) ({wrap_open}rate(nv_inference_request_success{m}[{w}]){wrap_close})"
                    " / 1e6",
                ),
            ),
        ),
        ServerPreset(
            "tgi",
            "tgi_request_count",
            (("queue_size", "sum by ({by}) ({wrap_open}tgi_queue_size{m}{wrap_close})"),),
        ),
        ServerPreset("tf-serving", ":tensorflow:serving:request_count"),
        ServerPreset("torchserve", "ts_inference_requests_total"),
        ServerPreset("kserve", "http_requests_total"),
        ServerPreset("generic", "http_requests_total"),
    )
}


@dataclass(frozen=True)
class MetricQueries:
    """The PromQL a target is read with; each returns an instant vector grouped by the
    target labels (or, for a query owned by one target, possibly one unlabelled series).

    request_rate: requests per second.
    gpu_util: mean GPU utilization of the target's pods, percent (None: not read).
    counter_resets: resets of the request counter in the rate window (None: not checked).
    last_sample: newest raw sample time of the counter, epoch seconds (None: not checked).
    extra: named extra signals.
    split_labels: the (namespace, workload) label names results are split by.
    """

    request_rate: str
    gpu_util: str | None = None
    counter_resets: str | None = None
    last_sample: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    split_labels: tuple[str, str] = ("namespace", "deployment")

    def all_queries(self) -> dict[str, str]:
        """kind -> query, for the kinds that are set."""
        out = {"request_rate": self.request_rate}
        for kind in ("gpu_util", "counter_resets", "last_sample"):
            q = getattr(self, kind)
            if q is not None:
                out[kind] = q
        out.update({f"extra:{name}": q for name, q in self.extra})
        return out


def _wrap(labels: TargetLabels) -> tuple[str, str]:
    """label_replace around an expression so it carries the workload label."""
    if not labels.workload_from_pod:
        return "", ""
    pattern = POD_NAME_PATTERNS[labels.workload_kind]
    return "label_replace(", f', "{labels.workload}", "$1", "{labels.pod}", "{pattern}")'


def _matchers(matchers: str) -> str:
    return "{" + matchers + "}" if matchers else ""


def gpu_util_query(labels: TargetLabels = TargetLabels(), gpu: GpuLabels = GpuLabels()) -> str:
    """Mean DCGM GPU utilization per target, joined to the target's pods by pod name."""
    inner = f'{gpu.metric}{{{gpu.pod}!=""}}'
    pattern = POD_NAME_PATTERNS[labels.workload_kind]
    inner = f'label_replace({inner}, "{labels.workload}", "$1", "{gpu.pod}", "{pattern}")'
    if gpu.namespace != labels.namespace:
        inner = f'label_replace({inner}, "{labels.namespace}", "$1", "{gpu.namespace}", "(.*)")'
    return f"avg by ({labels.by}) ({inner})"


def counter_queries(
    counter: str,
    *,
    labels: TargetLabels = TargetLabels(),
    rate_window_s: int = 120,
    matchers: str = "",
    gpu: GpuLabels | None = GpuLabels(),
    extra_templates: tuple[tuple[str, str], ...] = (),
) -> MetricQueries:
    """Queries for a request counter: rate, resets and last sample time, plus GPU util.

    rate_window_s: the rate() window, seconds; at least two scrape intervals (default 120).
    matchers: extra label matchers for the counter, e.g. 'model_name="llama"'.
    gpu: DCGM labels, or None to skip GPU utilization.
    """
    w = f"{int(rate_window_s)}s"
    wo, wc = _wrap(labels)
    sel = f"{counter}{_matchers(matchers)}"
    fmt = {"by": labels.by, "w": w, "m": _matchers(matchers), "wrap_open": wo, "wrap_close": wc}
    return MetricQueries(
        request_rate=f"sum by ({labels.by}) ({wo}rate({sel}[{w}]){wc})",
        gpu_util=gpu_util_query(labels, gpu) if gpu is not None else None,
        counter_resets=f"sum by ({labels.by}) ({wo}resets({sel}[{w}]){wc})",
        last_sample=f"max by ({labels.by}) ({wo}timestamp({sel}){wc})",
        extra=tuple((name, t.format(**fmt)) for name, t in extra_templates),
        split_labels=(labels.namespace, labels.workload),
    )


def preset_queries(
    preset: str,
    *,
    labels: TargetLabels = TargetLabels(),
    rate_window_s: int = 120,
    matchers: str = "",
    gpu: GpuLabels | None = GpuLabels(),
    counter: str | None = None,
) -> MetricQueries:
    """The queries of a named preset (see PRESETS); `counter` overrides its metric name."""
    try:
        p = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown metrics preset {preset!r}; known: {sorted(PRESETS)}") from None
    return counter_queries(
        counter or p.counter,
        labels=labels,
        rate_window_s=rate_window_s,
        matchers=matchers,
        gpu=gpu,
        extra_templates=p.extra,
    )


def custom_queries(
    request_rate: str, gpu_util: str | None = None, *, labels: TargetLabels = TargetLabels()
) -> MetricQueries:
    """User-written queries: read as given, no reset or sample-age checks. A query shared by
    several targets must group by `labels`; one owned by a single target may return one
    unlabelled series."""
    return MetricQueries(
        request_rate=request_rate,
        gpu_util=gpu_util,
        split_labels=(labels.namespace, labels.workload),
    )
