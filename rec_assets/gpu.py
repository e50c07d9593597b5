"""How GPU assets are marked: the `gpu` concurrency pool and the Kubernetes request for one GPU.

`dagster.yaml` limits the pool to one run at a time on a single machine; on Kubernetes the
`dagster-k8s/config` tag makes `k8s_job_executor` put the step on a node with a GPU.
"""

GPU_POOL = "gpu"

GPU_K8S_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }
}

GPU_ASSET_KWARGS = {"pool": GPU_POOL, "op_tags": GPU_K8S_TAGS, "kinds": {"pytorch", "gpu"}}
"""Keyword arguments for `@dg.asset` on every asset that can use a GPU."""
