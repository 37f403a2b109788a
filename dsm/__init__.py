"""dsm: a streaming speech toolkit built on Delayed Streams Modeling.

`dsm.transcribe`, `dsm.speak`, `dsm.translate` and `dsm.load` are the Python API
(`dsm.api`); they are imported on first use, so `import dsm` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "speak", "transcribe", "translate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dsm import api

        return getattr(api, name)
    raise AttributeError(f"module 'dsm' has no attribute {name!r}")
