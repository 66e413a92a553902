"""Procedural chest radiographs with painted findings (numpy + scipy.ndimage).

A frontal (PA / portable AP) or lateral chest is composed from soft shapes in *density* units
(0 = air, 1 = metal; bright = dense, the MONOCHROME2 convention): body soft tissue, lungs with
vascular markings, mediastinum, spine, heart, aortic knob, hemidiaphragms, ribs, clavicles.
Findings from :class:`~datamodules.synthetic.population.CxrFindings` are painted with strong,
visible effects: heart size (cardiomegaly), widened mediastinum, basal effusion with a meniscus,
perihilar haze / Kerley lines / alveolar edema by grade, consolidation patches with air
bronchograms, plate-like atelectasis with volume loss, a pneumothorax edge with absent lung
markings, nodules, rib fractures, apical pleural thickening and radiopaque devices. Patient and
acquisition variation: size, position, rotation, lung volume, exposure, scatter and noise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from datamodules.synthetic.population import CxrFindings

__all__ = ["Anatomy", "View", "render_cxr", "sample_anatomy"]

View = Literal["PA", "AP", "LATERAL"]


@dataclass(frozen=True)
class Anatomy:
    """Per-patient body habitus (shared by all views of the patient).

    Attributes:
        scale: overall chest size factor.
        shift_x, shift_y: chest position offset (normalised units).
        heart_ratio: normal heart half-width / thoracic half-width.
        lung_volume: diaphragm position offset (+ = deeper inspiration).
        female: breast shadows.
        gastric_bubble: visible stomach gas.
        rib_phase: vertical offset of the rib cage.
        soft: soft-tissue density.
    """

    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    heart_ratio: float = 0.4
    lung_volume: float = 0.0
    female: bool = False
    gastric_bubble: bool = True
    rib_phase: float = 0.0
    soft: float = 0.42

    def __post_init__(self) -> None:
        if not 0.5 <= self.scale <= 1.5:
            raise ValueError(f"scale must be in [0.5, 1.5], got {self.scale}")


def sample_anatomy(sex: str, rng: np.random.Generator) -> Anatomy:
    """Draw a patient's habitus."""
    return Anatomy(
        scale=float(rng.uniform(0.9, 1.04)),
        shift_x=float(rng.uniform(-0.03, 0.03)),
        shift_y=float(rng.uniform(-0.03, 0.03)),
        heart_ratio=float(rng.uniform(0.37, 0.41)),
        lung_volume=float(rng.uniform(-0.05, 0.05)),
        female=sex == "F",
        gastric_bubble=bool(rng.random() < 0.7),
        rib_phase=float(rng.uniform(-0.02, 0.02)),
        soft=float(rng.uniform(0.38, 0.46)),
    )


def _sig(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    soft: float = 0.02,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """Soft mask (0..1) of a rotated ellipse; ``soft`` is the edge width."""
    if angle_deg:
        a = math.radians(angle_deg)
        dx, dy = x - cx, y - cy
        u = dx * math.cos(a) + dy * math.sin(a)
        v = -dx * math.sin(a) + dy * math.cos(a)
    else:
        u, v = x - cx, y - cy
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return _sig((1.0 - r) * min(rx, ry) / soft)


def _polyline(
    x: np.ndarray,
    y: np.ndarray,
    pts: list[tuple[float, float]],
    width: float,
) -> np.ndarray:
    """Soft mask of a thick polyline (distance to the nearest segment < width/2)."""
    d = np.full(x.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        vx, vy = x1 - x0, y1 - y0
        ll = vx * vx + vy * vy
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / max(ll, 1e-12), 0.0, 1.0)
        d = np.minimum(d, np.hypot(x - (x0 + t * vx), y - (y0 + t * vy)))
    return _sig((width / 2 - d) / max(width / 6, 1e-4))


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (float32) with correlation length ``sigma_px``."""
    h, w = shape
    if sigma_px <= 2.0:
        f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_px)
    else:  # random Fourier features: separable outer products, a fraction of the cost
        ry = np.arange(h, dtype=np.float32)
        rx = np.arange(w, dtype=np.float32)
        f = np.zeros(shape, dtype=np.float32)
        for _ in range(16):
            wy, wx = rng.normal(0.0, 1.0 / sigma_px, size=2)
            py, px_ = rng.uniform(0.0, 2 * np.pi, size=2)
            f += np.outer(np.cos(wy * ry + py), np.cos(wx * rx + px_)).astype(np.float32)
    return ((f - f.mean()) / (f.std() + 1e-6)).astype(np.float32)


def _grid(
    shape: tuple[int, int],
    anat: Anatomy,
    rot_deg: float,
    mag: float,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (xx - (w - 1) / 2) / (h / 2)
    y = (yy - (h - 1) / 2) / (h / 2)
    a = math.radians(rot_deg)
    xr = x * math.cos(a) - y * math.sin(a)
    yr = x * math.sin(a) + y * math.cos(a)
    s = anat.scale * mag
    return (
        ((xr - anat.shift_x) / s).astype(np.float32),
        ((yr - anat.shift_y) / s).astype(np.float32),
    )


def _side_sign(side: str) -> float:
    """Image x sign of the patient's side (PA convention: patient's right on image left)."""
    return -1.0 if side == "right" else 1.0


def _zone_y(zone: str) -> float:
    return {"upper": -0.4, "mid": -0.08, "lower": 0.22}[zone]


def render_cxr(
    findings: CxrFindings,
    anatomy: Anatomy,
    view: View,
    shape: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Render one radiograph.

    Args:
        findings: ground truth to paint.
        anatomy: patient habitus.
        view: ``PA``, ``AP`` (portable, supine-ish, magnified heart) or ``LATERAL``.
        shape: ``(H, W)`` in pixels.
        rng: image stream (exposure, noise, small positioning changes).

    Returns:
        float32 ``(H, W)`` in ``[0, 1]``, bright = dense.
    """
    if view == "LATERAL":
        dens = _lateral(findings, anatomy, shape, rng)
    elif view in ("PA", "AP"):
        dens = _frontal(findings, anatomy, shape, rng, portable=view == "AP")
    else:
        raise ValueError(f"unknown view {view!r}")
    # exposure and detector
    h, _ = shape
    scatter = 0.03 * _smooth_noise(shape, h / 6, rng)
    gamma = float(rng.uniform(0.85, 1.15))
    img = np.clip(dens + scatter, 0.0, 1.0) ** gamma
    img = ndimage.gaussian_filter(img, 0.6)
    img = img + rng.normal(0.0, float(rng.uniform(0.008, 0.02)), size=shape)
    lo, hi = float(rng.uniform(0.0, 0.04)), float(rng.uniform(0.92, 1.0))
    img = lo + (hi - lo) * img
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _frontal(
    f: CxrFindings,
    anat: Anatomy,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    portable: bool,
) -> np.ndarray:
    rot = float(rng.uniform(-5.0, 5.0) if portable else rng.uniform(-2.5, 2.5))
    x, y = _grid(shape, anat, rot, 1.0)
    h, _ = shape
    px = 2.0 / h  # one pixel in normalised units
    soft = anat.soft
    dens = np.full(shape, 0.02, dtype=np.float32)
    # body, neck and shoulders
    body = _sig((1.0 - ((x / 0.8) ** 4 + ((y - 0.2) / 1.25) ** 4)) / 0.08)
    neck = _ellipse(x, y, 0.0, -1.05, 0.2, 0.4, 0.03)
    shoulders = _ellipse(x, y, -0.62, -0.78, 0.32, 0.2, 0.05) + _ellipse(
        x, y, 0.62, -0.78, 0.32, 0.2, 0.05
    )
    body = np.clip(body + neck + shoulders, 0.0, 1.0)
    dens = dens + (soft - 0.02) * body
    if anat.female:
        for sx in (-1.0, 1.0):
            dens += 0.06 * _ellipse(x, y, sx * 0.45, 0.5, 0.3, 0.25, 0.08)
    # diaphragm domes (patient right = image left is higher)
    vol = anat.lung_volume - (0.06 if portable else 0.0)
    dome = {"right": 0.40 - vol, "left": 0.46 - vol}
    ate = f.strength("Atelectasis")
    if ate:
        for side in ("left", "right"):
            if f.atelectasis_side in (side, "both"):
                dome[side] -= 0.07 * ate
    lungs = np.zeros(shape, dtype=np.float32)
    lung_masks: dict[str, np.ndarray] = {}
    lung_geom: dict[str, tuple[float, float, float, float]] = {}
    for side in ("right", "left"):
        sx = _side_sign(side)
        cx, cy, rx, ry = sx * 0.36, -0.07, 0.3 if side == "right" else 0.28, 0.64
        apex_dome = dome[side]
        under = _sig((apex_dome + 1.3 * (x - sx * 0.36) ** 2 - y) / 0.012)
        m = _ellipse(x, y, cx, cy, rx, ry, 0.015) * under
        lung_masks[side] = m
        lung_geom[side] = (cx, cy, rx, ry)
        lungs = np.maximum(lungs, m)
    lung_density = 0.1
    # vascular markings: smooth texture concentrated towards the hila
    hilum_r = np.minimum(np.hypot(x + 0.17, y + 0.02), np.hypot(x - 0.17, y + 0.02))
    vessel_gain = 1.0 + 0.8 * (f.edema_grade >= 1) + 0.5 * (f.edema_grade >= 2)
    texture = _smooth_noise(shape, 1.6, rng) * 0.022 * vessel_gain * np.exp(-hilum_r / 0.35)
    lung_fill = lung_density + texture + 0.05 * np.exp(-hilum_r / 0.12) * vessel_gain
    dens = dens * (1 - lungs) + lung_fill * lungs
    # ribs (posterior arcs) and clavicles
    frac_rib = 5
    ax = np.abs(x)
    rib_y = y - (-0.22 * ax + 0.55 * ax**2) + 0.62 - anat.rib_phase
    if f.strength("Fracture"):  # step-off of one rib lateral to the fracture line
        sx = _side_sign(f.fracture_side)
        near = np.abs(rib_y - 0.115 * frac_rib) < 0.06
        rib_y = rib_y - 0.03 * (near & (x * sx > 0.5))
        gap = near & (np.abs(x * sx - 0.5) < 0.012)
    else:
        gap = np.zeros(shape, dtype=bool)
    phase = rib_y / 0.115
    dist = (phase - np.round(phase)) * 0.115
    ribs = np.exp(-((dist / 0.02) ** 2)) * ((phase > -0.5) & (phase < 9.5) & ~gap)
    ribs = ribs * _sig((0.78 - ax) / 0.02) * _sig((ax - 0.06) / 0.02)
    dens += 0.075 * ribs
    for sx in (-1.0, 1.0):
        dens += 0.11 * _polyline(
            x, y, [(sx * 0.06, -0.66), (sx * 0.4, -0.74), (sx * 0.72, -0.8)], 0.05
        )
    if portable:  # scapulae projected over the lateral lungs
        for sx in (-1.0, 1.0):
            dens += 0.05 * _ellipse(x, y, sx * 0.66, -0.42, 0.12, 0.3, 0.04)
    # mediastinum, trachea, spine
    med_w = 0.11 + 0.08 * f.strength("Enlarged Cardiomediastinum")
    upper = _sig((0.3 - y) / 0.03) * _sig((y + 0.9) / 0.03)
    mediastinum = _sig((med_w - np.abs(x + 0.01)) / 0.015) * upper
    dens = np.maximum(dens, 0.52 * mediastinum + dens * (1 - mediastinum))
    trachea = _sig((0.028 - np.abs(x + 0.005)) / 0.008) * _sig((-0.34 - y) / 0.02)
    dens -= 0.18 * trachea
    spine = _sig((0.065 - np.abs(x)) / 0.01) * _sig((y + 1.0) / 0.02)
    dens += spine * (0.1 + 0.04 * np.cos(2 * np.pi * (y - anat.rib_phase) / 0.115))
    # aortic knob
    dens = np.maximum(dens, 0.55 * _ellipse(x, y, 0.1, -0.33, 0.065, 0.06, 0.01))
    # heart
    cm = f.strength("Cardiomegaly") * max(f.cardiomegaly_size, 0.6)
    heart_rx = anat.heart_ratio * 0.75 * (1.0 + 0.65 * cm) * (1.08 if portable else 1.0)
    heart_ry = 0.24 * (1.0 + 0.2 * cm)
    heart_cx = 0.07 + 0.35 * (heart_rx - 0.3)
    heart = _ellipse(
        x, y, heart_cx, 0.2 + 0.3 * (heart_ry - 0.24), heart_rx, heart_ry, 0.015, angle_deg=-12.0
    )
    heart *= _sig((0.55 - y) / 0.02)
    dens = dens * (1 - heart) + 0.6 * heart + 0.05 * ribs * heart
    # below the diaphragm: abdomen soft tissue already, gastric bubble
    if anat.gastric_bubble:
        bubble = _ellipse(x, y, 0.32, dome["left"] + 0.12, 0.09, 0.05, 0.015)
        dens -= 0.2 * bubble
    # ---- findings ------------------------------------------------------------------------
    lung_any = np.clip(lungs, 0.0, 1.0)
    ed = f.edema_grade * (1.0 if f.states.get("Edema") is not None else 0.0)
    if ed:
        bat = np.exp(-((np.abs(x) - 0.2) ** 2 / (2 * 0.2**2) + (y - 0.02) ** 2 / (2 * 0.3**2)))
        haze = (0.08 + 0.07 * ed) * bat
        if ed >= 3:
            haze *= 1.0 + 0.5 * _sig(_smooth_noise(shape, 4.0, rng) * 2.0)
        dens += haze * lung_any
        if ed >= 2:  # Kerley B lines at the lateral bases
            for side in ("right", "left"):
                sx = _side_sign(side)
                for k in range(5):
                    yk = dome[side] - 0.05 - 0.045 * k
                    line = _polyline(x, y, [(sx * 0.58, yk), (sx * 0.66, yk)], 0.012)
                    dens += 0.12 * line * lung_masks[side]
    opac = max(f.strength("Consolidation"), f.strength("Pneumonia"))
    if opac or f.strength("Lung Opacity"):
        amp = 0.32 * opac if opac else 0.17 * f.strength("Lung Opacity")
        sx = _side_sign(f.opacity_side)
        cy = _zone_y(f.opacity_zone)
        env = np.exp(-((x - sx * 0.37) ** 2 / (2 * 0.13**2) + (y - cy) ** 2 / (2 * 0.13**2)))
        blob = _sig((_smooth_noise(shape, 5.0, rng) * 0.6 + 3.0 * env - 1.4) / 0.25) * env**0.3
        patch = amp * blob * lung_masks[f.opacity_side if f.opacity_side else "right"]
        if opac >= 1.0:  # air bronchograms
            for k in range(3):
                ang = rng.uniform(-0.6, 0.6) + (math.pi if sx < 0 else 0.0)
                x0, y0 = sx * 0.25, cy - 0.03 + 0.03 * k
                pts = [(x0, y0), (x0 + 0.18 * math.cos(ang), y0 + 0.18 * math.sin(ang))]
                patch -= 0.1 * _polyline(x, y, pts, 0.01) * blob
        dens += patch
    if ate:
        for side in ("left", "right"):
            if f.atelectasis_side in (side, "both"):
                sx = _side_sign(side)
                yb = dome[side] - 0.1
                band = _polyline(x, y, [(sx * 0.18, yb - 0.02), (sx * 0.55, yb + 0.03)], 0.035)
                dens += 0.22 * ate * band * lung_masks[side]
    eff = f.strength("Pleural Effusion")
    if eff:
        for side in ("left", "right"):
            if f.effusion_side in (side, "both"):
                sx = _side_sign(side)
                cx, cy, rx, ry = lung_geom[side]
                hemi = _ellipse(x, y, cx, cy + 0.05, rx + 0.04, ry + 0.05, 0.02)
                level = dome[side] - (0.08 + 0.32 * f.effusion_size) * eff
                lateral = np.clip((x * sx - 0.12) / 0.6, 0.0, 1.2)
                surface = level - 0.22 * eff * lateral**2  # meniscus rises laterally
                fluid = _sig((y - surface) / 0.02) * hemi
                depth = np.clip((y - surface) / 0.15, 0.0, 1.0)
                target = 0.42 + 0.14 * depth
                dens = dens * (1 - fluid) + np.maximum(dens, target) * fluid
    ptx = f.strength("Pneumothorax")
    if ptx:
        side = f.pneumothorax_side
        sx = _side_sign(side)
        cx, cy, rx, ry = lung_geom[side]
        s = 0.3 * f.pneumothorax_size * ptx  # the lung collapses towards the hilum/base
        sy = 0.7 * s
        icx, icy = cx - sx * rx * s, cy + ry * sy
        inner = _ellipse(x, y, icx, icy, rx * (1 - s), ry * (1 - sy), 0.006)
        space = np.clip(lung_masks[side] - inner, 0.0, 1.0)
        dens = dens * (1 - space) + 0.03 * space + 0.04 * inner * lung_masks[side]
        edge = _ellipse(x, y, icx, icy, rx * (1 - s) - 2.5 * px, ry * (1 - sy) - 2.5 * px, 0.006)
        rim = np.clip(inner - edge, 0.0, 1.0)
        dens += 0.16 * rim * lung_masks[side]
    les = f.strength("Lung Lesion")
    if les:
        sx = _side_sign(f.lesion_side)
        r = 0.035 + 0.05 * f.lesion_size
        cy = _zone_y(f.lesion_zone)
        lobul = 0.08 * r * _smooth_noise(shape, 2.0, rng)
        nod = _ellipse(x + lobul, y - lobul, sx * 0.4, cy, r, r, 0.008)
        dens += 0.34 * les * nod
    po = f.strength("Pleural Other")
    if po:
        side = f.pleural_other_side
        cx, cy, rx, ry = lung_geom[side]
        cap = lung_masks[side] * _sig((cy - ry + 0.13 - y) / 0.02)
        dens += 0.25 * po * cap
    if f.strength("Fracture"):  # callus / step at the fracture site
        sx = _side_sign(f.fracture_side)
        yf = -0.62 + 0.115 * frac_rib + anat.rib_phase - 0.22 * 0.5 + 0.55 * 0.25
        dens += (
            0.12 * f.strength("Fracture") * _ellipse(x, y, sx * 0.5, yf + 0.015, 0.03, 0.03, 0.008)
        )
    dens = _paint_devices_frontal(dens, x, y, f, rng)
    return dens


def _paint_devices_frontal(
    dens: np.ndarray, x: np.ndarray, y: np.ndarray, f: CxrFindings, rng: np.random.Generator
) -> np.ndarray:
    metal = 0.96
    w = 0.011
    masks: list[np.ndarray] = []
    jitter = float(rng.uniform(-0.02, 0.02))
    for dev in f.devices:
        if dev == "ett":
            for dx in (-0.012, 0.012):
                masks.append(_polyline(x, y, [(dx, -1.1), (dx + 0.005, -0.38 + jitter)], 0.008))
        elif dev == "ng":
            masks.append(
                _polyline(
                    x, y, [(-0.03, -1.1), (-0.02, 0.0), (0.05, 0.52), (0.28, 0.62), (0.36, 0.58)], w
                )
            )
        elif dev == "cvc":
            masks.append(
                _polyline(
                    x,
                    y,
                    [(-0.3, -1.05), (-0.16, -0.72), (-0.07, -0.45), (-0.05, -0.22 + jitter)],
                    w,
                )
            )
        elif dev == "pacemaker":
            gen = _ellipse(x, y, 0.46, -0.62, 0.085, 0.06, 0.006)
            masks.append(gen)
            masks.append(
                _polyline(
                    x,
                    y,
                    [
                        (0.42, -0.6),
                        (0.22, -0.58),
                        (0.02, -0.42),
                        (-0.06, -0.12),
                        (0.02, 0.12),
                        (0.14, 0.3),
                    ],
                    0.012,
                )
            )
        elif dev == "chest_tube":
            sx = _side_sign(f.pneumothorax_side)
            pts = [(sx * 0.75, 0.45), (sx * 0.55, 0.3), (sx * 0.42, -0.1), (sx * 0.35, -0.5)]
            tube = _polyline(x, y, pts, 0.03) - 0.6 * _polyline(x, y, pts, 0.012)
            masks.append(np.clip(tube, 0.0, 1.0))
        elif dev == "sternotomy":
            for k in range(5):
                yk = -0.45 + 0.14 * k
                masks.append(
                    _ellipse(x, y, 0.0, yk, 0.028, 0.012, 0.004)
                    - _ellipse(x, y, 0.0, yk, 0.016, 0.005, 0.004)
                )
    for m in masks:
        m = np.clip(m, 0.0, 1.0)
        dens = dens * (1 - m) + metal * m
    return dens


def _lateral(
    f: CxrFindings, anat: Anatomy, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    rot = float(rng.uniform(-3.0, 3.0))
    x, y = _grid(shape, anat, rot, 1.0)
    soft = anat.soft
    dens = np.full(shape, 0.02, dtype=np.float32)
    body = _ellipse(x, y, 0.0, 0.15, 0.74, 1.2, 0.05)
    dens += (soft + 0.06 - 0.02) * body  # thicker in the lateral projection
    arms = _ellipse(x, y, 0.1, -0.75, 0.5, 0.3, 0.08)
    dens += 0.08 * arms * body
    dome = 0.42 - anat.lung_volume
    under = _sig((dome + 0.3 * (x + 0.05) ** 2 + 0.12 * x - y) / 0.015)
    lung = _ellipse(x, y, 0.03, -0.06, 0.56, 0.64, 0.02) * under
    hilum_r = np.hypot(x - 0.05, y + 0.05)
    vessel_gain = 1.0 + 0.8 * (f.edema_grade >= 1)
    tex = _smooth_noise(shape, 1.6, rng) * 0.02 * vessel_gain * np.exp(-hilum_r / 0.4)
    dens = dens * (1 - lung) + (0.17 + tex) * lung
    # spine with vertebral bodies, sternum, trachea
    spine_x = 0.56
    spine = _sig((0.08 - np.abs(x - spine_x - 0.04 * y)) / 0.01)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (y - anat.rib_phase) / 0.13)
    dens = np.maximum(dens, (0.5 + 0.12 * vert) * spine)
    dens += 0.1 * _polyline(x, y, [(-0.64, -0.55), (-0.6, 0.3)], 0.04)
    dens -= 0.12 * _polyline(x, y, [(-0.02, -1.1), (0.05, -0.3)], 0.06)
    # heart (anterior, inferior)
    cm = f.strength("Cardiomegaly") * max(f.cardiomegaly_size, 0.6)
    hrx = 0.27 * (1 + 0.45 * cm)
    heart = _ellipse(
        x, y, -0.26 + 0.4 * (hrx - 0.27), 0.24, hrx, 0.26 * (1 + 0.15 * cm), 0.02, angle_deg=-25.0
    )
    heart *= _sig((dome + 0.12 - y) / 0.02)
    dens = dens * (1 - heart) + 0.58 * heart
    # findings
    if f.edema_grade and f.states.get("Edema") is not None:
        bat = np.exp(-(hilum_r**2) / (2 * 0.25**2))
        dens += (0.07 + 0.06 * f.edema_grade) * bat * lung
    opac = max(
        f.strength("Consolidation"), f.strength("Pneumonia"), 0.5 * f.strength("Lung Opacity")
    )
    if opac:
        cy = _zone_y(f.opacity_zone)
        cx = 0.25 if f.opacity_zone == "lower" else 0.0
        env = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.13**2))
        blob = _sig((_smooth_noise(shape, 5.0, rng) * 0.6 + 3.0 * env - 1.4) / 0.25) * env**0.3
        dens += 0.28 * opac * blob * lung
    eff = f.strength("Pleural Effusion")
    if eff:
        level = dome - 0.05 - 0.25 * f.effusion_size * eff
        post = np.clip((x - 0.05) / 0.5, 0.0, 1.2)
        surface = level - 0.2 * post**2 * eff
        fluid = _sig((y - surface) / 0.02) * _ellipse(x, y, 0.03, 0.0, 0.6, 0.68, 0.02)
        fluid *= _sig((x + 0.1) / 0.04)
        dens = dens * (1 - fluid) + np.maximum(dens, 0.5) * fluid
    les = f.strength("Lung Lesion")
    if les:
        r = 0.035 + 0.05 * f.lesion_size
        dens += 0.3 * les * _ellipse(x, y, 0.1, _zone_y(f.lesion_zone), r, r, 0.008)
    ptx = f.strength("Pneumothorax")
    if ptx:
        front = _ellipse(x, y, -0.35, -0.35, 0.18 * f.pneumothorax_size, 0.3, 0.01) * lung
        dens = dens * (1 - front) + 0.04 * front
    metal = 0.96
    for dev in f.devices:
        if dev in ("ett", "ng"):
            m = _polyline(x, y, [(0.0, -1.1), (0.06, -0.35 if dev == "ett" else 0.6)], 0.012)
        elif dev == "cvc":
            m = _polyline(x, y, [(0.05, -1.05), (-0.02, -0.6), (-0.08, -0.25)], 0.011)
        elif dev == "pacemaker":
            m = np.clip(
                _ellipse(x, y, -0.55, -0.6, 0.05, 0.07, 0.006)
                + _polyline(x, y, [(-0.52, -0.6), (-0.2, -0.35), (-0.3, 0.25)], 0.012),
                0.0,
                1.0,
            )
        elif dev == "chest_tube":
            m = _polyline(x, y, [(0.5, 0.4), (0.2, -0.1), (-0.05, -0.5)], 0.025)
        else:  # sternotomy wires seen end-on along the sternum
            m = np.clip(
                sum(_ellipse(x, y, -0.61, -0.4 + 0.14 * k, 0.015, 0.01, 0.004) for k in range(5)),
                0.0,
                1.0,
            )
        dens = dens * (1 - m) + metal * m
    return dens
