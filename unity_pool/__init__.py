"""unity_pool: renderers of controlled synthetic scenes with ground-truth attributes.

A scene spec (`Scene`) goes to a renderer (in process: `render`; over TCP: a server speaking
`unity_pool.protocol`, reached with `RenderClient`) and comes back as an image plus its resolved
attributes (`vocab.ATTRIBUTES`). `edit` makes counterfactual scenes; `write_probe_set` renders a
balanced, labelled probe set to disk. See docs/render-protocol.md.
"""

from unity_pool.attributes import scene_attributes
from unity_pool.client import (
    RenderClient,
    RendererTimeout,
    RendererUnavailable,
    RenderFailed,
    RenderFailure,
    RenderResult,
)
from unity_pool.edit import edit, editable_attributes
from unity_pool.probeset import ProbeSetError, ProbeSetInfo, ProbeSetParams, write_probe_set
from unity_pool.procedural import object_mask, render
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Camera, Lighting, Scene, SceneError, SceneObject

__all__ = [
    "Camera",
    "Lighting",
    "ProbeSetError",
    "ProbeSetInfo",
    "ProbeSetParams",
    "RenderClient",
    "RenderFailed",
    "RenderFailure",
    "RenderResult",
    "RendererTimeout",
    "RendererUnavailable",
    "Scene",
    "SceneError",
    "SceneObject",
    "edit",
    "editable_attributes",
    "object_mask",
    "render",
    "sample_scenes",
    "scene_attributes",
    "write_probe_set",
]
