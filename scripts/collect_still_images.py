"""Collect the still images that feed the synthetic-video generator of the default model's recipe.

Sources (all from Debian or PyPI packages, as ../shared/data/README.md allows):
  * Debian opencv-doc:                 /usr/share/doc/opencv-doc/examples/data/*.jpg|png
  * Debian plasma-workspace-wallpapers: /usr/share/wallpapers/*/contents/images/*
  * Debian gnome-backgrounds:           /usr/share/backgrounds/gnome/*
  * PyPI scikit-image:                  skimage/data/*.png|jpg
Each image is copied (long side capped at 1280 px, RGB JPEG) into OUT, with SOURCES.txt naming
where it came from. Missing sources are skipped with a note.

    apt-get install -y opencv-doc plasma-workspace-wallpapers gnome-backgrounds
    pip install scikit-image
    python scripts/collect_still_images.py OUT
"""

import sys
from pathlib import Path

from PIL import Image

EXT = (".jpg", ".jpeg", ".png", ".webp")


def sources():
    yield "opencv-doc", sorted(Path("/usr/share/doc/opencv-doc/examples/data").glob("*"))
    walls = sorted(Path("/usr/share/wallpapers").glob("*/contents/images/*"))
    # one landscape file per wallpaper (they ship several resolutions of the same picture)
    seen, picked = set(), []
    for f in sorted(walls, key=lambda f: (f.parts[-4], -f.stat().st_size)):
        if f.parts[-4] not in seen:
            seen.add(f.parts[-4])
            picked.append(f)
    yield "plasma-workspace-wallpapers", picked
    yield "gnome-backgrounds", sorted(Path("/usr/share/backgrounds/gnome").glob("*"))
    try:
        import skimage
        yield "scikit-image", sorted((Path(skimage.__file__).parent / "data").glob("*"))
    except ImportError:
        print("note: scikit-image not installed; skipped", file=sys.stderr)


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for package, files in sources():
        for f in files:
            if f.suffix.lower() not in EXT or not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if min(im.size) < 96:
                        continue
                    scale = 1280 / max(im.size)
                    if scale < 1:
                        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
                    name = f"{package}__{f.parts[-4] + '_' if package.startswith('plasma') else ''}{f.stem}.jpg"
                    im.save(folder / name, quality=92)
                    lines.append(f"{name}\t{package}\t{f}")
            except OSError as e:
                print(f"note: skipped {f}: {e}", file=sys.stderr)
    (folder / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} images in {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "still_images")
