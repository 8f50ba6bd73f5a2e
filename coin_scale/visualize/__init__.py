"""Feature visualization: images optimised to drive a unit, no Ray (Olah et al., Distill 2017).

    param = fft_image(64, batch=2, generator=torch.Generator().manual_seed(0))
    objective = channel("layer4", 3, layout="nchw") - 0.1 * tv()
    result = render(model, objective, param, steps=256, seed=0)   # images (2, 3, 64, 64) in [0, 1]

`param.py` (pixel and Fourier parameterisations with decorrelated colour), `transforms.py`
(jitter, scale, rotation under a seeded generator), `objectives.py` (composable objectives over
captured layer activations), `optimize.py` (the Adam loop with forward hooks).
"""

from coin_scale.visualize.objectives import (
    Captured,
    Objective,
    channel,
    direction,
    diversity,
    neuron,
    tv,
)
from coin_scale.visualize.optimize import RenderResult, measure, render
from coin_scale.visualize.param import (
    PARAMS,
    ImageParam,
    fft_image,
    make_param,
    pixel_image,
    to_pil,
    to_uint8,
)
from coin_scale.visualize.transforms import (
    Transform,
    compose,
    jitter,
    random_rotate,
    random_scale,
    standard_transforms,
)

__all__ = [
    "Captured",
    "PARAMS",
    "ImageParam",
    "Objective",
    "RenderResult",
    "Transform",
    "channel",
    "compose",
    "direction",
    "diversity",
    "fft_image",
    "jitter",
    "make_param",
    "measure",
    "neuron",
    "pixel_image",
    "to_pil",
    "to_uint8",
    "random_rotate",
    "random_scale",
    "render",
    "standard_transforms",
    "tv",
]
