"""The toy dataset: a procedural, class-conditional stand-in for ImageNet that a laptop can train
on (toy.py, the tiny recipes, the tests; paper Sec. 3.2-3.3 in miniature).

The class fixes a shape and a colour: the object structure. The position, size, rotation, a
stripe texture on the object and a faint checkerboard behind it vary per sample: the image detail.
A structured latent space (Sec. 3.2, Fig. 3) should put the former in the front channels and the
latter in the back ones, and a class-conditional diffusion model (Sec. 3.3) must learn the former.
Items follow data.py's contract, `dataset[i] -> (x, y, bad)`, with `bad` always 0.

    python data.py --out /tmp/toy_grid.png   # 8 samples of each toy class as a grid
"""
import math

import numpy as np
import torch
from torch.utils.data import Dataset

# Shape masks on coordinates (dx, dy) normalised by the object radius; each fits in the unit disk.
SHAPES = {
    "circle": lambda dx, dy, r, a: r <= 1.0,
    "square": lambda dx, dy, r, a: np.maximum(abs(dx), abs(dy)) <= 0.78,
    "triangle": lambda dx, dy, r, a: (dy <= 0.6) & (abs(dx) <= 0.6 * (dy + 1.0)),
    "ring": lambda dx, dy, r, a: (r <= 1.0) & (r >= 0.55),
    "cross": lambda dx, dy, r, a: (((abs(dx) <= 0.3) & (abs(dy) <= 1.0))
                                   | ((abs(dy) <= 0.3) & (abs(dx) <= 1.0))),
    "diamond": lambda dx, dy, r, a: abs(dx) + abs(dy) <= 1.0,
    "star": lambda dx, dy, r, a: r <= 0.4 + 0.6 * ((1.0 + np.cos(5.0 * a)) / 2.0) ** 2,
    "crescent": lambda dx, dy, r, a: (r <= 1.0) & ((dx - 0.5) ** 2 + (dy + 0.1) ** 2 >= 0.8**2),
    "hexagon": lambda dx, dy, r, a: np.maximum(abs(dx), 0.5 * abs(dx) + 0.866 * abs(dy)) <= 0.9,
    "frame": lambda dx, dy, r, a: ((np.maximum(abs(dx), abs(dy)) <= 0.85)
                                   & (np.maximum(abs(dx), abs(dy)) >= 0.45)),
}
COLOURS = {
    "red": (0.90, 0.15, 0.15), "green": (0.20, 0.80, 0.25), "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.20), "magenta": (0.85, 0.25, 0.85), "cyan": (0.20, 0.85, 0.90),
    "orange": (1.00, 0.55, 0.10), "white": (0.95, 0.95, 0.95), "pink": (1.00, 0.60, 0.70),
    "brown": (0.80, 0.52, 0.25),
}  # fmt: skip


class ToyShapes(Dataset):
    """n procedural images; item i is a pure function of (seed, i), so any worker count/order gives
    the same data.

    Class y = i % num_classes (balanced) fixes shape SHAPES[y % 10] and colour (a unique pair for
    up to 100 classes). Per sample: position, radius (0.18-0.32 of the side), rotation (+-15 deg,
    so a square never becomes a diamond), a stripe texture of random period/orientation/phase on
    the object and a faint checkerboard of random period/phase on a random dark background.
    """

    def __init__(self, n=50_000, resolution=32, num_classes=10, seed=0):
        if n < 1 or not 1 <= num_classes <= len(SHAPES) * len(COLOURS) or resolution < 8:
            raise ValueError(f"ToyShapes needs n >= 1, 1 <= num_classes <= 100, resolution >= 8; "
                             f"got n={n}, num_classes={num_classes}, "
                             f"resolution={resolution}")  # fmt: skip
        self.n, self.resolution, self.num_classes, self.seed = n, resolution, num_classes, seed
        shapes, colours = list(SHAPES), list(COLOURS)
        # Class y -> (shape y % 10, colour (y + y // 10) % 10): all pairs distinct for y < 100.
        self.class_shape = [shapes[y % len(shapes)] for y in range(num_classes)]
        self.class_colour = [colours[(y + y // len(shapes)) % len(colours)]
                             for y in range(num_classes)]
        self.classes = [f"{c} {s}" for s, c in zip(self.class_shape, self.class_colour)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        y = i % self.num_classes
        rng = np.random.default_rng([self.seed, i])  # own stream per (seed, i)
        res = self.resolution
        R = rng.uniform(0.18, 0.32) * res  # object radius in pixels
        cx, cy = rng.uniform(R, res - R, size=2)
        theta = math.radians(rng.uniform(-15, 15))
        u = np.arange(res) + 0.5  # pixel centres

        # Object mask, 2x2 supersampled so edges are anti-aliased at 16-32 px.
        m = np.zeros((res, res))
        for oy in (-0.25, 0.25):
            for ox in (-0.25, 0.25):
                gx, gy = (u[None, :] + ox - cx) / R, (u[:, None] + oy - cy) / R  # (1, W), (H, 1)
                dx = math.cos(theta) * gx + math.sin(theta) * gy  # (H, W), rotated frame
                dy = -math.sin(theta) * gx + math.cos(theta) * gy
                m += SHAPES[self.class_shape[y]](dx, dy,
                                                 np.hypot(dx, dy), np.arctan2(dy, dx)) / 4.0
        # Fine detail: periods of a few pixels, growing slowly with resolution so the texture stays
        # visible at 512 px but never reaches the object's scale.
        p = max(1.0, res / 64) ** 0.5
        gx, gy = np.meshgrid(u, u)  # (H, W) each
        phi = rng.uniform(0, math.pi)
        stripes = np.sin(2 * math.pi * (gx * math.cos(phi) + gy * math.sin(phi))
                         / (rng.uniform(2.5, 5) * p)
                         + rng.uniform(0, 2 * math.pi))  # fmt: skip
        pc, (ph, pv) = rng.uniform(3, 6) * p, rng.uniform(0, 2 * math.pi, size=2)
        checker = np.sign(np.sin(2 * math.pi * gx / pc + ph) * np.sin(2 * math.pi * gy / pc + pv))
        colour = np.array(COLOURS[self.class_colour[y]]) * rng.uniform(0.85, 1.0)  # (3,)
        # (3,) dark, low saturation
        background = rng.uniform(0.05, 0.35) + rng.uniform(-0.05, 0.05, size=3)
        obj = colour[:, None, None] * (0.72 + 0.28 * stripes)[None]  # (3, H, W)
        bg = background[:, None, None] + 0.06 * checker[None]  # (3, H, W)
        img = m[None] * obj + (1 - m[None]) * bg  # (3, H, W) in [0, 1]
        x = torch.from_numpy(np.clip(2 * img - 1, -1, 1)).float()  # (3, H, W) in [-1, 1]
        return x, y, 0
