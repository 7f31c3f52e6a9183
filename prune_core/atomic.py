"""Write files so that nothing half-written is ever seen: a temporary name, then a rename.

>>> import os, tempfile
>>> target = os.path.join(tempfile.mkdtemp(), "result.txt")
>>> with atomic_path(target) as tmp:
...     _ = tmp.write_text("done")
>>> open(target).read(), os.listdir(os.path.dirname(target))
('done', ['result.txt'])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it to ``path`` when the block succeeds,
    delete it when the block raises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
