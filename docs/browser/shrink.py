"""Store screenshots small: each PNG in a folder rewritten as a 256-colour palette PNG (charts and
dashboards have few colours; a quarter of the size or less, no visible change).

    python docs/browser/shrink.py docs/img
"""

import sys
from pathlib import Path

from PIL import Image


def shrink(path: Path) -> tuple[int, int]:
    """Rewrite `path` as a palette PNG; its sizes before and after, in bytes."""
    before = path.stat().st_size
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return before, path.stat().st_size


if __name__ == "__main__":
    for png in sorted(Path(sys.argv[1]).glob("*.png")):
        before, after = shrink(png)
        print(f"{png.name}: {before // 1024} KB -> {after // 1024} KB")
