"""Run by tests/test_multinode.py in its own process (Ray's Cluster needs a fresh driver): a
dissection on a local multi-node Ray cluster, with a worker node removed after the first batch.
Prints one JSON line: what was removed and the dissection's counts."""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

from coin_scale.dissect.config import DissectConfig
from coin_scale.runtime.dissect import run_dissection


def main(probe: str, warehouse: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head takes no work
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]  # one replica each
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    events: list[dict[str, str]] = []

    def remove_a_node(done: int) -> None:
        if done == 1 and not events:
            # removed at once, while its replica still has batches in flight (a spare node added
            # first gave those batches time to finish, and then nothing was lost to resubmit)
            cluster.remove_node(workers[0], allow_graceful=False)
            spare = cluster.add_node(num_cpus=1)  # where Ray restarts the lost replica
            events.append({"removed": workers[0].node_id, "added": spare.node_id})

    config = DissectConfig(model="resnet18", weights="none", layer="layer4", probe=probe,
                           warehouse=warehouse, top_k=5, batch_size=2, replicas=2)  # fmt: skip
    try:
        result = run_dissection(config, progress=False, on_batch=remove_a_node)
        print(json.dumps({"events": events, "images": result.n_images, "failed": result.n_failed}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
