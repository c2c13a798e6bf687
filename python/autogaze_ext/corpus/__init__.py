"""Gaze a whole video corpus on Ray Data: every GPU and machine of a cluster, resumable,
each clip exactly once.

```python
from autogaze_ext import corpus

summary = corpus.run(["videos/", "more.txt"], "out/", settings=corpus.CorpusSettings(gazing_ratio=0.3))
results = corpus.read("out/")        # {path: result}, equal to gaze() of each video
clips = corpus.read_clips("out/")    # pyarrow Table, one row per 16-frame clip
errors = corpus.read_errors("out/")  # pyarrow Table: path, unit, stage, message
```

Needs Ray Data and pyarrow: ``pip install autogaze_ext[corpus]``. Layout of the output folder:
:mod:`autogaze_ext.corpus.store`; the pipeline: :mod:`autogaze_ext.corpus.pipeline`.
"""

from __future__ import annotations

INSTALL_HINT = ("gazing a corpus needs Ray Data and pyarrow: pip install 'autogaze_ext[corpus]' "
                "(or: pip install 'ray[data]' pyarrow)")


def require() -> None:
    """ImportError with what to install when Ray Data or pyarrow is missing."""
    missing = []
    for module in ("ray", "ray.data", "pyarrow", "av"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"{INSTALL_HINT}; missing: {', '.join(missing)}")


require()

from .inputs import VIDEO_EXTENSIONS, list_inputs, probe  # noqa: E402
from .pipeline import CorpusError, Summary, run  # noqa: E402
from .reader import read, read_clips, read_errors  # noqa: E402
from .units import CorpusSettings  # noqa: E402

__all__ = ["CorpusError", "CorpusSettings", "INSTALL_HINT", "Summary", "VIDEO_EXTENSIONS",
           "list_inputs", "probe", "read", "read_clips", "read_errors", "require", "run"]
