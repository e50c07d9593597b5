"""The executor: multiprocess (forkserver) on one machine; Kubernetes jobs per step when `REC_EXECUTOR=k8s`.

With `k8s_job_executor`, each step runs in its own pod and the `dagster-k8s/config` tags on GPU
assets (rec_assets.gpu) request an `nvidia.com/gpu`, so only GPU steps land on GPU nodes.
"""

import os

import dagster as dg


def executor_for_environment():
    kind = os.environ.get("REC_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        # Steps fork from a server that has already imported the code location (torch,
        # transformers, feast), instead of each paying seconds of imports in a fresh process.
        return dg.multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": ["rec_assets"]}}}, name="multiprocess_forkserver"
        )
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"unknown REC_EXECUTOR '{kind}': use multiprocess, in_process or k8s")
