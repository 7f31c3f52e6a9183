"""Where benchmark results go: ``benchmarks/results/<name>.md``, printed as well.

publish("overhead", ["# Overhead", "", "| part | seconds |", ...])   # -> benchmarks/results/overhead.md
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def publish(name: str, lines: list[str]) -> Path:
    """Write ``lines`` (Markdown) to ``RESULTS / f"{name}.md"`` and print them; the file's path."""
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path
