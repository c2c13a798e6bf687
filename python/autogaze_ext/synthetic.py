"""Synthetic training video: unlimited, reproducible clips from a seed.

Every clip is a short film of one or more *shots* (hard cuts between them). A shot shows a
background (a still image, or a procedural texture when no image is given) through a moving
camera, with objects in front of it:

* camera: static, pan, zoom, handheld shake, rotation, or a mix, with static *holds* (stretches
  where nothing moves at all);
* objects: sprites cut from other images (or procedural patterns) with elliptic, rectangular or
  blob masks, moving, turning and scaling, occluding each other and the background; some stay
  still, some are attached to the scene (they move with the camera);
* lighting: brightness/contrast ramps, flicker, a moving light gradient, colour shifts;
* sensor noise and JPEG compression at random levels (or none, so that a static stretch gives
  frames identical to the previous one);
* many frame sizes and aspect ratios (landscape, square, portrait, cinema).

``SyntheticVideos(images=..., seed=s).clip(i)`` is a pure function of ``(s, i, frames, the image
list)``: the same arguments give the same bytes. Rendering is bilinear resampling
(``grid_sample``) in float32 on the CPU.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import files_under

__all__ = ["SyntheticVideos", "ImageBank", "IMAGE_EXTENSIONS", "FRAME_SIZES", "CAMERA_MOTIONS", "MOTION_WEIGHTS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# (height, width): landscape 4:3 and 16:9, square, portrait, 3:2, cinema 2.35:1, small webcams.
FRAME_SIZES = ((120, 160), (144, 176), (180, 320), (224, 224), (240, 320), (256, 256),
               (272, 640), (288, 352), (320, 240), (360, 640), (384, 512), (400, 300),
               (448, 448), (480, 640), (480, 854), (540, 960), (576, 768), (640, 360),
               (720, 1280), (854, 480), (300, 705), (512, 384))
CAMERA_MOTIONS = ("static", "pan", "zoom", "shake", "rotate", "mixed")
# Most real footage holds the camera still (surveillance, webcams, tripods, talking heads) or
# moves it slowly; the default mix follows that.
MOTION_WEIGHTS = (0.4, 0.2, 0.1, 0.12, 0.06, 0.12)


class ImageBank:
    """Still images from files and folders (searched recursively), loaded lazily as float32
    (3, h, w) tensors in [0, 1] with the long side capped at ``max_side``; a few stay cached."""

    def __init__(self, paths: Sequence[str | Path] = (), max_side: int = 1280, cache: int = 16):
        self.files = files_under(paths, IMAGE_EXTENSIONS, "ImageBank", "image")
        self.max_side = int(max_side)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_size = int(cache)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> torch.Tensor:
        """(3, h, w) float32 in [0, 1] of image ``index``."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from PIL import Image

        with Image.open(self.files[index]) as im:
            im = im.convert("RGB")
            scale = self.max_side / max(im.size)
            if scale < 1:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.BILINEAR)
            image = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
        self._cache[index] = image
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image


# ---- procedural textures (used when the bank is empty, and mixed in otherwise) ---------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 4) -> torch.Tensor:
    """(3, h, w) sum of upsampled random fields (cloud-like), normalised to [0, 1]."""
    out = torch.zeros(3, h, w)
    for o in range(octaves):
        cells = 2 ** (o + 1)
        field_ = torch.from_numpy(rng.random((1, 3, cells + 1, cells + 1), dtype=np.float32))
        out += F.interpolate(field_, size=(h, w), mode="bicubic", align_corners=True)[0] / 2 ** o
    out -= out.amin((1, 2), keepdim=True)
    return out / out.amax((1, 2), keepdim=True).clamp(min=1e-6)


def procedural_texture(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """(3, h, w) in [0, 1]: clouds, gradients, stripes, checkers or a collage of shapes."""
    kind = rng.integers(5)
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    colours = torch.from_numpy(rng.random((2, 3, 1, 1), dtype=np.float32))
    if kind == 0:
        return _smooth_noise(rng, h, w, octaves=int(rng.integers(2, 7)))
    if kind == 1:
        a = float(rng.uniform(0, 2 * math.pi))
        t = (x * math.cos(a) + y * math.sin(a)).clamp(0, 1)[None]
        return colours[0] * (1 - t) + colours[1] * t
    if kind == 2:
        period = float(rng.uniform(0.02, 0.2))
        a = float(rng.uniform(0, math.pi))
        t = (torch.sin((x * math.cos(a) + y * math.sin(a)) * 2 * math.pi / period) > 0).float()[None]
        return colours[0] * (1 - t) + colours[1] * t
    if kind == 3:
        n = int(rng.integers(3, 24))
        t = (((x * n * w / max(h, w)).floor() + (y * n * h / max(h, w)).floor()) % 2)[None]
        return colours[0] * (1 - t) + colours[1] * t
    canvas = _smooth_noise(rng, h, w, octaves=2) * 0.5
    for _ in range(int(rng.integers(5, 30))):
        cy, cx, ry, rx = rng.random(4) * np.array([1, 1, 0.25, 0.25]) + np.array([0, 0, 0.02, 0.02])
        colour = torch.from_numpy(rng.random((3, 1, 1), dtype=np.float32))
        if rng.random() < 0.5:
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        else:
            inside = ((y - cy).abs() <= ry) & ((x - cx).abs() <= rx)
        canvas = torch.where(inside[None], colour, canvas)
    return canvas


# ---- scene description ----------------------------------------------------------------------
@dataclass
class Camera:
    """Per-frame view of a background: centre (cx, cy) in [-1, 1] source coordinates, zoom
    (view half-size as a fraction of the source), angle in radians; each (T,)."""
    cx: np.ndarray
    cy: np.ndarray
    zoom: np.ndarray
    angle: np.ndarray


@dataclass
class Sprite:
    texture: torch.Tensor            # (4, h, w) RGB + alpha mask
    x: np.ndarray                    # (T,) centre in frame coordinates [-1, 1]
    y: np.ndarray
    size: np.ndarray                 # (T,) half-height as a fraction of the frame height
    angle: np.ndarray                # (T,)
    aspect: float                    # width / height of the sprite


@dataclass
class Shot:
    start: int
    stop: int
    background: torch.Tensor         # (3, h, w)
    camera: Camera
    sprites: list = field(default_factory=list)
    motion: str = "static"


def _motion_profile(rng: np.random.Generator, T: int) -> np.ndarray:
    """(T,) cumulative motion in [0, 1] with static holds: frames where it does not advance."""
    speed = np.ones(T)
    for _ in range(int(rng.integers(0, 3))):             # 0-2 holds
        if rng.random() < 0.6:
            a = int(rng.integers(0, T))
            speed[a:a + int(rng.integers(2, max(3, T // 2 + 1)))] = 0
    speed[0] = 0
    if rng.random() < 0.3:                                 # accelerate or decelerate
        speed *= np.linspace(*(rng.uniform(0.2, 1.8, 2)), T)
    total = speed.sum()
    return np.cumsum(speed) / total if total > 0 else np.zeros(T)


def _camera(rng: np.random.Generator, T: int, motion: str) -> Camera:
    zoom0 = rng.uniform(0.35, 1.0)
    cx0, cy0 = rng.uniform(-1 + zoom0, 1 - zoom0, 2) if zoom0 < 1 else (0.0, 0.0)
    p = _motion_profile(rng, T)
    cx, cy = np.full(T, cx0), np.full(T, cy0)
    zoom, angle = np.full(T, zoom0), np.zeros(T)
    kinds = {motion} if motion != "mixed" else set(rng.choice(CAMERA_MOTIONS[1:5], 2, replace=False))
    if "pan" in kinds:
        dist = rng.uniform(0.02, 0.6) * (1 - zoom0 + 0.3)
        a = rng.uniform(0, 2 * math.pi)
        cx, cy = cx + dist * math.cos(a) * p, cy + dist * math.sin(a) * p
    if "zoom" in kinds:
        zoom = zoom0 * np.exp(rng.uniform(-0.7, 0.7) * p)
    if "rotate" in kinds:
        angle = rng.uniform(-0.6, 0.6) * p
    if "shake" in kinds:
        amp = rng.uniform(0.003, 0.04)
        moving = np.diff(p, prepend=0) > 0
        jitter = rng.normal(0, amp, (2, T)) * moving
        cx, cy = cx + np.cumsum(jitter[0]) * 0.5 + jitter[0], cy + np.cumsum(jitter[1]) * 0.5 + jitter[1]
        angle = angle + rng.normal(0, amp * 0.5, T) * moving
    return Camera(cx, cy, zoom, angle)


def _blob_mask(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """(h, w) soft mask: ellipse, rectangle or a star-shaped blob."""
    y = torch.linspace(-1, 1, h)[:, None]
    x = torch.linspace(-1, 1, w)[None, :]
    kind = rng.integers(3)
    if kind == 0:
        d = x ** 2 + y ** 2
    elif kind == 1:
        d = torch.maximum(x.abs(), y.abs()) ** 2
    else:
        r = torch.sqrt(x ** 2 + y ** 2)
        theta = torch.atan2(y, x)
        radius = torch.full_like(theta, 0.75)
        for k in range(1, 5):
            radius = radius + float(rng.uniform(-0.12, 0.12)) * torch.cos(k * theta + float(rng.uniform(0, 6.3)))
        d = (r / radius.clamp(min=0.2)) ** 2
    edge = 4.0 / min(h, w)
    return ((1 - d) / edge).clamp(0, 1)


def _path(rng: np.random.Generator, T: int, static: bool) -> tuple[np.ndarray, np.ndarray]:
    x0, y0 = rng.uniform(-0.9, 0.9, 2)
    if static:
        return np.full(T, x0), np.full(T, y0)
    p = _motion_profile(rng, T) * (T - 1)
    v = rng.uniform(-0.25, 0.25, 2)
    acc = rng.normal(0, 0.01, 2) if rng.random() < 0.4 else np.zeros(2)
    x = x0 + v[0] * p + 0.5 * acc[0] * p ** 2
    y = y0 + v[1] * p + 0.5 * acc[1] * p ** 2
    fold = lambda q: np.abs(((q + 1) % 4) - 2) - 1            # bounce inside [-1, 1]
    return fold(x), fold(y)


class SyntheticVideos:
    """Reproducible synthetic clips (see the module docstring).

    Args:
        images: still-image files or folders (an empty list: procedural textures only).
        frames: frames per clip.
        seed: base seed; clip ``i`` depends only on (seed, i, frames, the image list).
        sizes: (height, width) choices; default ``FRAME_SIZES``.
        max_sprites: objects per shot at most.
        motion_weights: probabilities of ``CAMERA_MOTIONS`` per shot (default ``MOTION_WEIGHTS``).
        cut_probability: chance that a clip has a hard cut (then 1 or 2 of them).
    """

    def __init__(self, images: Sequence[str | Path] | ImageBank = (), frames: int = 16, seed: int = 0,
                 sizes: Sequence[tuple[int, int]] | None = None, max_sprites: int = 5,
                 motion_weights: Sequence[float] = MOTION_WEIGHTS, cut_probability: float = 0.2):
        if frames < 1:
            raise ValueError(f"SyntheticVideos: frames must be >= 1, got {frames}")
        self.bank = images if isinstance(images, ImageBank) else ImageBank(images)
        self.frames, self.seed = int(frames), int(seed)
        self.sizes = tuple(tuple(map(int, s)) for s in (sizes or FRAME_SIZES))
        if not self.sizes or any(min(s) < 16 for s in self.sizes):
            raise ValueError(f"SyntheticVideos: sizes must be (h, w) pairs >= 16, got {self.sizes}")
        self.max_sprites = int(max_sprites)
        weights = np.asarray(motion_weights, dtype=float)
        if weights.shape != (len(CAMERA_MOTIONS),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"SyntheticVideos: motion_weights must be {len(CAMERA_MOTIONS)} "
                             f"non-negative numbers ({', '.join(CAMERA_MOTIONS)}), got {motion_weights}")
        self.motion_weights = weights / weights.sum()
        if not 0 <= cut_probability <= 1:
            raise ValueError(f"SyntheticVideos: cut_probability must be in [0, 1], got {cut_probability}")
        self.cut_probability = float(cut_probability)

    # ---- sampling -----------------------------------------------------------------------------
    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index), 0x5EED])

    def _picture(self, rng: np.random.Generator, h: int, w: int, photo: float) -> torch.Tensor:
        if len(self.bank) and rng.random() < photo:
            image = self.bank.get(int(rng.integers(len(self.bank))))
            if rng.random() < 0.5:
                image = image.flip(-1)
            return image
        return procedural_texture(rng, h, w)

    def _sprite(self, rng: np.random.Generator, T: int, attached: bool) -> Sprite:
        source = self._picture(rng, 96, 96, photo=0.7)
        h = min(source.shape[1], int(rng.integers(24, 160)))
        w = min(source.shape[2], max(8, int(h * rng.uniform(0.5, 2.0))))
        top = int(rng.integers(0, source.shape[1] - h + 1))
        left = int(rng.integers(0, source.shape[2] - w + 1))
        rgb = source[:, top:top + h, left:left + w]
        texture = torch.cat([rgb, _blob_mask(rng, h, w)[None]], 0)
        static = attached or rng.random() < 0.25
        x, y = _path(rng, T, static)
        size0 = rng.uniform(0.06, 0.3)
        size = size0 * np.exp(rng.uniform(-0.5, 0.5) * _motion_profile(rng, T)) if not static and rng.random() < 0.3 else np.full(T, size0)
        spin = rng.uniform(-0.15, 0.15) if not static and rng.random() < 0.4 else 0.0
        angle = rng.uniform(-0.5, 0.5) + spin * np.arange(T)
        return Sprite(texture, x, y, size, angle, w / h)

    def describe(self, index: int) -> dict:
        """The sampled scene of clip ``index`` (size, shots, motions, lighting, noise)."""
        return self._plan(index)[1]

    def _plan(self, index: int):
        rng = self._rng(index)
        T = self.frames
        H, W = self.sizes[int(rng.integers(len(self.sizes)))]
        cuts = []
        if T >= 6 and rng.random() < self.cut_probability:
            cuts = sorted(set(int(c) for c in rng.integers(2, T - 1, 1 + int(rng.random() < 0.2))))
        bounds = [0, *cuts, T]
        shots = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            n = b - a
            motion = CAMERA_MOTIONS[int(rng.choice(len(CAMERA_MOTIONS), p=self.motion_weights))]
            background = self._picture(rng, 2 * H, 2 * W, photo=0.8)
            sprites = [self._sprite(rng, n, attached=rng.random() < 0.2)
                       for _ in range(int(rng.integers(0, self.max_sprites + 1)))]
            shots.append(Shot(a, b, background, _camera(rng, n, motion), sprites, motion))
        light = self._lighting(rng, T)
        noise = float(rng.choice([0, 0, 0, 1, 2, 4, 8])) / 255
        jpeg = int(rng.integers(25, 95)) if rng.random() < 0.35 else 0
        info = {"size": (H, W), "frames": T, "cuts": cuts,
                "motions": [s.motion for s in shots], "sprites": [len(s.sprites) for s in shots],
                "noise": noise, "jpeg": jpeg, "lighting": light["kind"]}
        return (rng, H, W, shots, light, noise, jpeg), info

    @staticmethod
    def _lighting(rng: np.random.Generator, T: int) -> dict:
        kind = str(rng.choice(["none", "none", "none", "ramp", "flicker", "gradient", "colour"]))
        gain, offset = np.ones(T), np.zeros(T)
        tint = np.ones((T, 3))
        if kind == "ramp":
            gain = np.linspace(1, rng.uniform(0.5, 1.5), T)
            offset = np.linspace(0, rng.uniform(-0.1, 0.1), T)
        elif kind == "flicker":
            gain = 1 + rng.normal(0, 0.08, T) * (rng.random(T) < 0.5)
        elif kind == "colour":
            tint = np.linspace(np.ones(3), rng.uniform(0.7, 1.3, 3), T)
        grad = None
        if kind == "gradient":
            grad = (rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.6), rng.uniform(-0.3, 0.3))
        return {"kind": kind, "gain": gain, "offset": offset, "tint": tint, "gradient": grad}

    # ---- rendering -------------------------------------------------------------------------------
    def clip(self, index: int) -> np.ndarray:
        """uint8 (T, H, W, 3) clip number ``index``."""
        (rng, H, W, shots, light, noise, jpeg), _ = self._plan(index)
        frames = torch.empty(self.frames, 3, H, W)
        for shot in shots:
            frames[shot.start:shot.stop] = self._render_shot(shot, H, W)
        frames = self._light(frames, light, H, W)
        if noise:
            frames = frames + noise * torch.from_numpy(rng.standard_normal(frames.shape, dtype=np.float32))
        out = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        if jpeg:
            out = _jpeg(out, jpeg)
        return out

    def _render_shot(self, shot: Shot, H: int, W: int) -> torch.Tensor:
        cam, n = shot.camera, shot.stop - shot.start
        bg = shot.background
        bh, bw = bg.shape[1:]
        # Output pixel offsets (u, v) from the centre map to source offsets k·R(angle)·(u, v),
        # k = source pixels per output pixel (zoom 1: the largest view of the output's aspect).
        k1 = min(bh / H, bw / W)
        theta = []
        for t in range(n):
            c, s, k = math.cos(cam.angle[t]), math.sin(cam.angle[t]), cam.zoom[t] * k1
            theta.append([[k * W / bw * c, -k * H / bw * s, cam.cx[t]],
                          [k * W / bh * s, k * H / bh * c, cam.cy[t]]])
        grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32), (n, 3, H, W), align_corners=False)
        frames = F.grid_sample(bg[None].expand(n, -1, -1, -1), grid, mode="bilinear",
                               padding_mode="reflection", align_corners=False)
        for sprite in shot.sprites:
            frames = self._paste(frames, sprite, H, W)
        return frames

    @staticmethod
    def _paste(frames: torch.Tensor, sprite: Sprite, H: int, W: int) -> torch.Tensor:
        """Composite a sprite over (n, 3, H, W) frames (bilinear, alpha-blended)."""
        n = frames.shape[0]
        theta = []
        for t in range(n):
            # frame -> sprite coordinates: undo translation, rotation and scale, in pixels
            size, aspect = sprite.size[t], sprite.aspect
            c, s = math.cos(sprite.angle[t]), math.sin(sprite.angle[t])
            a = np.array([[c * W / (H * size * aspect), s / (size * aspect)],
                          [-s * W / (H * size), c / size]])
            shift = -a @ np.array([sprite.x[t], sprite.y[t]])
            theta.append(np.concatenate([a, shift[:, None]], 1))
        grid = F.affine_grid(torch.tensor(np.stack(theta), dtype=torch.float32), (n, 4, H, W),
                             align_corners=False)
        layer = F.grid_sample(sprite.texture[None].expand(n, -1, -1, -1), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        alpha = layer[:, 3:]
        return frames * (1 - alpha) + layer[:, :3] * alpha

    @staticmethod
    def _light(frames: torch.Tensor, light: dict, H: int, W: int) -> torch.Tensor:
        if light["kind"] == "none":
            return frames
        gain = torch.tensor(light["gain"], dtype=torch.float32).view(-1, 1, 1, 1)
        offset = torch.tensor(light["offset"], dtype=torch.float32).view(-1, 1, 1, 1)
        tint = torch.tensor(light["tint"], dtype=torch.float32).view(-1, 3, 1, 1)
        frames = frames * gain * tint + offset
        if light["gradient"] is not None:
            a, strength, speed = light["gradient"]
            y = torch.linspace(-1, 1, H)[:, None]
            x = torch.linspace(-1, 1, W)[None, :]
            t = torch.arange(frames.shape[0], dtype=torch.float32).view(-1, 1, 1, 1)
            ramp = (x * math.cos(a) + y * math.sin(a))[None, None] + speed * t / max(1, frames.shape[0] - 1) * 2
            frames = frames * (1 + strength * torch.tanh(ramp))
        return frames


def _jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of every frame at ``quality`` (deterministic: equal frames stay equal)."""
    from PIL import Image

    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out[t] = np.asarray(im.convert("RGB"))
    return out
