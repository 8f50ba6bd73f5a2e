#!/usr/bin/env python
"""Held-out figures of a layer4 SAE of the probe-trained model (issue 6, item 5, until SAE
features become units of `dissect` and `run_sweep.py`).

Usage: .venv/bin/python scripts/sae_heldout_report.py SAE.safetensors [--n 500] [--seed 7]

Renders a single-object probe set from another seed (the SAE was trained on seed 0), then prints:
FVU and L0 of the SAE on its layer4 tokens; top-1 agreement and KL of the model with layer4
replaced by the reconstruction; and the offline explainer's IoU over neurons vs over SAE
features (both reduced by max over space, image-level masks at the 0.9 quantile).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from PIL import Image

from coin_scale.explain import OfflineExplainerConfig, concepts_from_probe, explain_units
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.probe import scan_probe
from coin_scale.sae import evaluate_sae, load_sae, replacement_metrics, tokens_from_conv
from coin_scale.sweep.inputs import cache_dir
from unity_pool.probeset import ProbeSetParams, write_probe_set

LAYER = "layer4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sae")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    root = cache_dir() / "probes" / f"single-large-n{args.n}-seed{args.seed}-64"
    if not (root / "attributes.parquet").exists():
        fixed = (("n_objects", 1), ("size", "large"))
        write_probe_set(root, ProbeSetParams(n=args.n, seed=args.seed, size=64, fixed=fixed), progress=False)
    payload = resolve_model(ModelSource(model=str(cache_dir() / "probe_model_shape_v1.pt")))
    module = build_module(payload).eval()
    sae, _, _ = load_sae(args.sae, expect_layer=LAYER)
    probe = scan_probe(str(root))
    pre = payload.preprocess
    x = torch.cat([pre.normalize(pre.load(Image.open(i.path).convert("RGB")).unsqueeze(0)) for i in probe.images])
    maps: dict[str, torch.Tensor] = {}
    hook = dict(module.named_modules())[LAYER].register_forward_hook(
        lambda _m, _i, out: maps.__setitem__("out", out.detach())
    )
    with torch.inference_mode():
        module(x)
    hook.remove()
    out = maps["out"]
    tokens = tokens_from_conv(out)
    print(f"held-out probe: {len(probe.images)} images ({root}), {tokens.shape[0]} tokens")
    print("reconstruction:", evaluate_sae(sae, iter(tokens.split(1024))))
    print("layer replaced:", replacement_metrics(module, LAYER, sae, iter(x.split(100))))
    concepts = concepts_from_probe(probe)
    n, _, h, w = out.shape
    with torch.inference_mode():
        features = sae.encode(tokens)[0].reshape(n, h, w, -1).amax(dim=(1, 2)).float()
    for name, matrix in (("neurons", out.amax(dim=(2, 3)).float()), ("SAE features", features)):
        explained = [e for e in explain_units(matrix, concepts, OfflineExplainerConfig()) if e.status == "explained"]
        ious = [e.iou for e in explained]
        print(
            f"{name}: {matrix.shape[1]} units, {len(explained)} explained, mean IoU "
            f"{statistics.mean(ious):.3f}, median {statistics.median(ious):.3f}, IoU >= 0.5: "
            f"{sum(i >= 0.5 for i in ious) / len(ious):.2f}"
        )


if __name__ == "__main__":
    main()
