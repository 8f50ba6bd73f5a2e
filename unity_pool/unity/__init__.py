"""The Unity backend of `unity_pool`: a C# render server inside a Unity player, and its launcher.

* `UnityProject/Assets/CoinScale/` — the C# server (protocol code free of UnityEngine under
  `Protocol/`, scene building under `Rendering/`, the MonoBehaviour under `Server/`).
* `standin/` — a console program built from `Protocol/` with Mono, answering solid images.
* `launcher` — `UnityPlayerConfig` (configs/unity.yaml) and `UnityPlayer`: start, READY, ping,
  restart.
* `standin` — a Python process that behaves like the player, for tests and trials.

See docs/unity.md. Importing this package starts nothing.
"""

from unity_pool.unity.launcher import (
    UnityPlayer,
    UnityPlayerConfig,
    UnityPlayerNotFound,
    UnityStartupError,
    UnityStartupTimeout,
)

__all__ = [
    "UnityPlayer",
    "UnityPlayerConfig",
    "UnityPlayerNotFound",
    "UnityStartupError",
    "UnityStartupTimeout",
]
