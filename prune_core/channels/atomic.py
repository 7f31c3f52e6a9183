"""Write files so that nothing half-written is ever seen: a temporary name, then a rename.

The file gets the mode an ordinary ``open(path, "w")`` would give (0644 under the usual umask),
not the private 0600 of a temporary file, so logged artifacts stay readable by their team.

>>> import os, tempfile
>>> target = os.path.join(tempfile.mkdtemp(), "result.txt")
>>> with atomic_path(target) as tmp:
...     _ = tmp.write_text("done")
>>> open(target).read(), os.listdir(os.path.dirname(target))
('done', ['result.txt'])
>>> oct(os.stat(target).st_mode & 0o777) == oct(0o666 & ~_umask())
True
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it to ``path`` when the block succeeds,
    delete it when the block raises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
