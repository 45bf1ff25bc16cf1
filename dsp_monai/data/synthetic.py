"""A synthetic FIB-SEM organelle dataset in the OpenOrganelle zarr layout, generated from a seed.

No EM data can be downloaded here, so the project's default data is drawn: every "cell" is a small anisotropic
3D volume (EM s0 voxels 10.48 x 8 x 8 nm, z y x) whose organelles are geometric primitives (signed distance
functions), rasterised once at EM resolution with a FIB-SEM look and once per crop at twice that resolution as a
COSEM label map. What it contains (COSEM ids in brackets):

- a plasma membrane [2] with microvilli between cytosol [35] and bright extracellular space [1];
- a large nucleus with a double envelope (membranes [20], lumen [21]) interrupted by pores [22, 23], nucleoplasm
  [28], a patchy heterochromatin layer under the envelope plus clumps [24] and sometimes a nucleolus [29]; some
  crops label the whole nucleus with the generic id [37];
- elongated, bent mitochondria with a dark double membrane and cristae stripes [3], matrix [4], nucleoids [5];
- look-alike round organelles: clear vesicles [8, 9], multivesicular bodies with internal vesicles [10, 11],
  dense dark lysosomes [12, 13], some of which also hold vesicle-like rings;
- thin structures: ER tubes and sheets, many running along the nucleus [16, 17], and straight microtubules
  [30, 36];
- ribosome-like dark speckles (texture only, labelled cytosol), mottled textures, blur, shot noise, slice-to-slice
  brightness jitter and faint curtaining stripes; 8-bit grey with dark membranes.

Layout written to ``OUT`` (zarr format 2, OME-NGFF 0.4 ``multiscales`` on every multiscale group, axes z y x in
nanometres, translations = pixel centres)::

    OUT/cell_00.zarr/recon-1/em/fibsem-uint8/s0, s1          EM pyramid (s1 = 2x mean)
    OUT/cell_00.zarr/recon-1/labels/groundtruth/crop1/all/s0, s1
                                                             labels at twice the EM resolution; s1 lines up
                                                             with EM s0; crops sit at non-zero offsets
    OUT/datalist.json                                        every z-slice of every crop (``data`` pool with
                                                             ``subvolume`` = ``cell_00/crop1``)
    OUT/datalist_3d.json                                     every crop as one 3D item (same pool and
                                                             subvolumes; :func:`volume_datalist`)
    OUT/contact_sheet.png, OUT/stats.json

Each crop group carries ``cellmap.annotation.class_names``: the COSEM short names annotated there. Some crops leave
the ER or the microtubules unannotated (their ids are written but not listed, so readers map them to 255) and some
have a band of value 255 (unknown). The datalist's classes are the paper's 11 HeLa-2 classes.

Run ``python -m dsp_monai.data.synthetic --out DIR`` (see ``--help``), or call :func:`generate_dataset` /
:func:`ensure_default_dataset`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from dsp_monai.data.datalist import save_datalist
from dsp_monai.data.files import write_json
from dsp_monai.data.label_tables import (
    COSEM_LABELS,
    HELA2_CLASS_NAMES,
    IGNORE_INDEX,
    apply_lut,
    build_lut,
)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
"""Bumped whenever the generator's output changes, so cached default datasets are regenerated."""

DATALIST_NAME = "datalist.json"
VOLUME_DATALIST_NAME = "datalist_3d.json"
EM_GROUP = "recon-1/em/fibsem-uint8"
CROP_ROOT = "recon-1/labels/groundtruth"
_CHUNKS = (16, 128, 128)

# COSEM ids used by the generator.
ECS, PM, MITO_MEM, MITO_LUM, MITO_DNA = 1, 2, 3, 4, 5
VES_MEM, VES_LUM, MVB_MEM, MVB_LUM, LYSO_MEM, LYSO_LUM = 8, 9, 10, 11, 12, 13
ER_MEM, ER_LUM, NE_MEM, NE_LUM, NP_OUT, NP_IN = 16, 17, 20, 21, 22, 23
HCHROM, NUCPL, NUCLEO, MT_OUT, CYTO, MT_IN, NUC = 24, 28, 29, 30, 35, 36, 37
GENERATED_IDS = (1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 20, 21, 22, 23, 24, 28, 29, 30, 35, 36)

# Geometry, nanometres.
MEMBRANE = 8.0  # thickness of a single membrane in the labels
NE_LUMEN = 24.0  # perinuclear space between the two envelope membranes
NE_TOTAL = 2 * MEMBRANE + NE_LUMEN
MITO_RIM = 16.0  # outer + inner mitochondrial membrane
PM_THICKNESS = 10.0
MT_OUTER, MT_INNER = 12.5, 7.0


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and randomness of a synthetic dataset.

    Attributes:
        seed: everything is drawn from it; cell ``i`` depends only on ``seed`` and ``i``.
        cells: number of zarr containers (cells).
        crops_per_cell: annotated crops (sub-volumes) per cell, laid out on a grid without overlap.
        crop_shape: crop size in EM s0 voxels (z, y, x); labels have twice as many voxels per axis.
        em_scale: EM s0 voxel size in nm (z, y, x); labels s0 are half of it.
        margin: EM voxels around and between crops in y and x.
        z_margin: EM voxels above and below the crops.
        unannotated_fraction: chance that a crop leaves the ER or the microtubules unannotated (each).
        unknown_band_fraction: chance that a crop has a band of unknown (255) voxels.
        generic_nucleus_fraction: chance that a crop labels the nucleus with the generic id 37.
    """

    seed: int = 0
    cells: int = 4
    crops_per_cell: int = 4
    crop_shape: tuple[int, int, int] = (20, 128, 128)
    em_scale: tuple[float, float, float] = (10.48, 8.0, 8.0)
    margin: int = 16
    z_margin: int = 4
    unannotated_fraction: float = 0.2
    unknown_band_fraction: float = 0.3
    generic_nucleus_fraction: float = 0.25

    def __post_init__(self):
        if self.cells < 1 or self.crops_per_cell < 1:
            raise ValueError(f"cells and crops_per_cell must be >= 1, got {self.cells} and {self.crops_per_cell}.")
        if len(self.crop_shape) != 3 or self.crop_shape[0] < 1 or min(self.crop_shape[1:]) < 8:
            raise ValueError(f"crop_shape must be three sizes (z >= 1, y and x >= 8), got {self.crop_shape}.")
        if len(self.em_scale) != 3 or min(self.em_scale) <= 0:
            raise ValueError(f"em_scale must be three positive voxel sizes (z, y, x), got {self.em_scale}.")
        if self.margin < 2 or self.z_margin < 1:
            raise ValueError(f"margin must be >= 2 and z_margin >= 1, got {self.margin} and {self.z_margin}.")

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """EM s0 shape of one cell (even sizes, so that s1 is an exact 2x mean)."""
        rows, cols = _crop_grid(self.crops_per_cell)
        cz, cy, cx = self.crop_shape
        shape = (cz + 2 * self.z_margin, rows * cy + (rows + 1) * self.margin, cols * cx + (cols + 1) * self.margin)
        return tuple(s + s % 2 for s in shape)


def _crop_grid(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


# ---------------------------------------------------------------------------------------------------------------
# Geometry: signed distance functions evaluated on broadcastable coordinate arrays P = (z, y, x), in nm.
# ---------------------------------------------------------------------------------------------------------------


# Constants enter as Python floats so that float32 grids stay float32 (NumPy 2 promotes to float64 otherwise).


def _sphere(P, centre, radius):
    cz, cy, cx = (float(v) for v in centre)
    return np.sqrt((P[0] - cz) ** 2 + (P[1] - cy) ** 2 + (P[2] - cx) ** 2) - float(radius)


def _capsule(P, a, b, radius):
    a = np.asarray(a, dtype=np.float64)
    ba = np.asarray(b, dtype=np.float64) - a
    length2 = max(float(ba @ ba), 1e-9)
    bz, by, bx = (float(v) for v in ba)
    pz, py, px = (P[i] - float(a[i]) for i in range(3))
    h = np.clip((pz * (bz / length2) + py * (by / length2)) + px * (bx / length2), 0.0, 1.0)
    return np.sqrt((pz - bz * h) ** 2 + (py - by * h) ** 2 + (px - bx * h) ** 2) - float(radius)


def _er_sdf(P, a, b, radius, half_height):
    """A tube (``half_height == 0``) or a sheet: the (y, x) capsule from a to b extruded over z +- half_height."""
    if half_height <= 0:
        return _capsule(P, a, b, radius)
    planar = _capsule((float(a[0]), P[1], P[2]), a, b, radius)
    vertical = np.abs(P[0] - float(a[0])) - float(half_height)
    outside = np.sqrt(np.maximum(planar, 0.0) ** 2 + np.maximum(vertical, 0.0) ** 2)
    return np.minimum(np.maximum(planar, vertical), 0.0) + outside


def _er_box(a, b, radius, half_height, margin):
    pad = np.array([radius + half_height, radius, radius]) + margin
    return np.minimum(a, b) - pad, np.maximum(a, b) + pad


def _waves(P, waves):
    """Sum of plane waves ``a sin(k . p + phase)``; on a grid, sin(A + B) is expanded so that only 2D and 1D
    arrays go through sin and cos."""
    total = 0.0
    for amplitude, kz, ky, kx, phase in waves:
        first = P[0] * float(kz) + P[1] * float(ky) + float(phase)
        second = P[2] * float(kx)
        total = total + float(amplitude) * (np.sin(first) * np.cos(second) + np.cos(first) * np.sin(second))
    return total


def _smooth_min(a, b, k):
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _random_waves(rng, count, amplitude, wavelength, flat=0.3):
    waves = []
    for _ in range(count):
        direction = rng.normal(size=3) * np.array([flat, 1.0, 1.0])
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelength)
        waves.append((rng.uniform(*amplitude), *(direction * k), rng.uniform(0, 2 * np.pi)))
    return np.asarray(waves)


@dataclass
class Grid:
    """Voxel centres ``origin + index * scale`` (nm) of an array of ``shape``."""

    origin: np.ndarray
    scale: np.ndarray
    shape: tuple[int, int, int]

    def window(self, low, high):
        """Index slices and coordinates of the voxels whose centres lie in the box [low, high], or None."""
        start = np.maximum(np.ceil((np.asarray(low) - self.origin) / self.scale), 0).astype(int)
        stop = np.minimum(np.floor((np.asarray(high) - self.origin) / self.scale) + 1, self.shape).astype(int)
        if np.any(stop <= start):
            return None
        slices = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        coords = [
            (self.origin[i] + self.scale[i] * np.arange(start[i], stop[i], dtype=np.float32)).astype(np.float32)
            for i in range(3)
        ]
        P = (coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :])
        return slices, P

    def everything(self):
        """:meth:`window` over the whole grid."""
        return self.window(self.origin - 1, self.origin + self.scale * np.asarray(self.shape))


@dataclass
class Mito:
    """A mitochondrion: a bent capsule with cristae and nucleoids (nm)."""

    points: np.ndarray  # (3, 3) polyline a -> m -> b
    radius: float
    axis: np.ndarray
    period: float
    phase: float
    dna: list = field(default_factory=list)  # (centre, radius)

    def sdf(self, P):
        """Signed distance to the outer membrane."""
        return np.minimum(
            _capsule(P, self.points[0], self.points[1], self.radius),
            _capsule(P, self.points[1], self.points[2], self.radius),
        )

    def cristae_distance(self, P):
        """Distance to the nearest crista: sheets across the long axis, ``period`` apart, slightly wavy."""
        oz, oy, ox = (float(v) for v in self.points[0])
        az, ay, ax = (float(v) for v in self.axis)
        s = (P[0] - oz) * az + (P[1] - oy) * ay + (P[2] - ox) * ax
        s = s + 12.0 * np.sin(P[1] * 0.021 + P[2] * 0.017 + self.phase)
        frac = np.mod(s / self.period + self.phase, 1.0)
        return np.abs(frac - 0.5) * self.period

    def bounds(self):
        """Bounding box (low, high) including the membrane."""
        return self.points.min(0) - self.radius - 8, self.points.max(0) + self.radius + 8


@dataclass
class Cell:
    """The geometry of one synthetic cell (all in nm, axes z y x)."""

    extent: np.ndarray
    cell_centre: np.ndarray
    cell_radius: float
    cell_waves: np.ndarray
    villi: list
    nucleus_centre: np.ndarray
    nucleus_radii: np.ndarray
    nucleus_waves: np.ndarray
    pores: np.ndarray
    chromatin: list
    nucleoli: list
    mitos: list
    vesicles: list
    mvbs: list
    lysosomes: list
    er: list
    microtubules: list
    chromatin_waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))

    def boundary_sdf(self, P):
        """Signed distance to the plasma membrane's outer surface (negative inside the cell), without villi."""
        return _sphere(P, self.cell_centre, self.cell_radius) + _waves(P, self.cell_waves)

    def chromatin_depth(self, P):
        """How far the peripheral heterochromatin reaches in from the inner envelope (nm, 0 = none)."""
        return np.maximum(25.0 + _waves(P, self.chromatin_waves), 0.0)

    def nucleus_sdf(self, P):
        """Approximate signed distance to the nucleus' outer surface (negative inside)."""
        q = [(P[i] - float(self.nucleus_centre[i])) for i in range(3)]
        r = [float(v) for v in self.nucleus_radii]
        k0 = np.sqrt((q[0] * (1 / r[0])) ** 2 + (q[1] * (1 / r[1])) ** 2 + (q[2] * (1 / r[2])) ** 2)
        k1 = np.sqrt((q[0] * (1 / r[0] ** 2)) ** 2 + (q[1] * (1 / r[1] ** 2)) ** 2 + (q[2] * (1 / r[2] ** 2)) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12) + _waves(P, self.nucleus_waves)

    def cell_sdf(self, grid: Grid) -> np.ndarray:
        """Distance to the plasma membrane including microvilli (smoothly joined), on every voxel of ``grid``."""
        _, P = grid.everything()
        distance = np.broadcast_to(self.boundary_sdf(P), grid.shape).astype(np.float32)
        blend = 40.0
        for a, b, radius in self.villi:
            window = grid.window(np.minimum(a, b) - radius - blend, np.maximum(a, b) + radius + blend)
            if window:
                slices, Q = window
                distance[slices] = _smooth_min(distance[slices], _capsule(Q, a, b, radius), blend)
        return distance


def _points(P):
    return (P[:, 0], P[:, 1], P[:, 2])


class _Occupancy:
    """Spheres already taken by organelles, for rejection sampling."""

    def __init__(self):
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)

    def free(self, points, radius, margin):
        if not len(self.radii):
            return True
        d = np.linalg.norm(points[:, None, :] - self.centres[None], axis=-1)
        return bool(np.all(d > self.radii[None] + radius + margin))

    def add(self, points, radius):
        self.centres = np.vstack([self.centres, points])
        self.radii = np.concatenate([self.radii, np.full(len(points), radius)])


def _project_to_surface(sdf, points, level, iterations=6):
    """Move points along the gradient of ``sdf`` onto its ``level`` set (Newton steps, numerical gradient)."""
    points = points.copy()
    eps = 1.0
    for _ in range(iterations):
        value = sdf(_points(points)) - level
        grad = np.stack(
            [(sdf(_points(points + eps * np.eye(3)[i])) - sdf(_points(points - eps * np.eye(3)[i]))) / (2 * eps)
             for i in range(3)],
            axis=1,
        )
        norm2 = np.maximum((grad**2).sum(1, keepdims=True), 1e-6)
        points = points - value[:, None] * grad / norm2
    return points


def _unit(v):
    return v / max(np.linalg.norm(v), 1e-9)


def _draw_cell(rng: np.random.Generator, extent: np.ndarray) -> Cell:
    """Draw one cell's organelles inside a volume of ``extent`` nm (z, y, x)."""
    centre = extent / 2
    half = extent[1:].min() / 2
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([0.0, np.sin(angle), np.cos(angle)])
    cell_radius = rng.uniform(5000, 9000)
    pm_offset = rng.uniform(0.15, 1.3) * half
    cell_centre = centre - direction * (cell_radius - pm_offset)
    cell_waves = _random_waves(rng, 4, (40, 110), (700, 2200))

    radii = np.array([rng.uniform(1800, 2600), rng.uniform(1400, 2400), rng.uniform(1400, 2400)])
    nucleus_offset = rng.uniform(0.1, 1.1) * half
    radius_along = 1.0 / np.linalg.norm(direction / radii)
    lateral = np.array([0.0, -direction[2], direction[1]]) * rng.uniform(-0.4, 0.4) * half
    nucleus_centre = centre - direction * (nucleus_offset + radius_along) + lateral
    nucleus_centre[0] = centre[0] + rng.uniform(-400, 400)
    nucleus_waves = _random_waves(rng, 4, (25, 60), (900, 2500))

    cell = Cell(extent, cell_centre, cell_radius, cell_waves, [], nucleus_centre, radii, nucleus_waves,
                np.zeros((0, 3)), [], [], [], [], [], [], [], [])
    low, high = np.array([-150.0, -100, -100]), extent + np.array([150.0, 100, 100])

    def inside_cytoplasm(points, clearance):
        P = _points(points)
        return bool(np.all(cell.boundary_sdf(P) < -clearance) and np.all(cell.nucleus_sdf(P) > clearance))

    def uniform_points(n):
        return rng.uniform(low, high, size=(n, 3))

    # Microvilli: fingers from the plasma membrane into the extracellular space.
    seeds = _project_to_surface(cell.boundary_sdf, uniform_points(200), 0.0)
    seeds = seeds[np.all((seeds > low) & (seeds < high), axis=1)]
    for base in seeds[: rng.integers(4, 10)]:
        normal = _unit(base - cell_centre) + rng.normal(scale=0.35, size=3) * np.array([0.3, 1, 1])
        tip = base + _unit(normal) * rng.uniform(150, 450)
        cell.villi.append((base - _unit(normal) * 40, tip, rng.uniform(40, 70)))

    # Nuclear pores on the envelope's mid-surface, spaced at least 220 nm apart.
    candidates = nucleus_centre + rng.normal(size=(3000, 3)) * radii
    candidates = _project_to_surface(cell.nucleus_sdf, candidates, -NE_TOTAL / 2)
    candidates = candidates[np.all((candidates > low) & (candidates < high), axis=1)]
    pores: list = []
    for point in candidates:
        if all(np.linalg.norm(point - q) > 220 for q in pores):
            pores.append(point)
    cell.pores = np.asarray(pores).reshape(-1, 3)

    # Heterochromatin: a patchy layer under the envelope (thickness varies smoothly, often to zero) and clumps.
    cell.chromatin_waves = _random_waves(rng, 5, (45, 90), (350, 1100), flat=1.0)
    for _ in range(80):
        point, radius = uniform_points(1)[0], rng.uniform(50, 140)
        if cell.nucleus_sdf(_points(point[None]))[0] < -(radius + 120):
            cell.chromatin.append((point, radius))
            if len(cell.chromatin) >= 12:
                break
    if rng.random() < 0.6:
        for point in uniform_points(200):
            radius = rng.uniform(300, 600)
            if cell.nucleus_sdf(_points(point[None]))[0] < -(radius + 200):
                cell.nucleoli.append((point, radius))
                break

    occupied = _Occupancy()

    # Mitochondria: bent capsules, mostly lying in the slice plane.
    for _ in range(400):
        if len(cell.mitos) >= rng.integers(6, 11):
            break
        radius = rng.uniform(105, 165)
        length = rng.uniform(350, 1400)
        axis = _unit(rng.normal(size=3) * np.array([0.25, 1, 1]))
        middle = uniform_points(1)[0]
        bend = _unit(np.cross(axis, rng.normal(size=3))) * rng.uniform(0, 0.25) * length
        points = np.stack([middle - axis * length / 2, middle + bend, middle + axis * length / 2])
        samples = np.concatenate([np.linspace(points[0], points[1], 4), np.linspace(points[1], points[2], 4)[1:]])
        if inside_cytoplasm(samples, radius + 60) and occupied.free(samples, radius, 40):
            occupied.add(samples, radius)
            period = rng.uniform(55, 85)
            dna = []
            for _ in range(rng.integers(0, 3)):
                t = rng.uniform(0.2, 0.8)
                dna.append((points[0] + (points[2] - points[0]) * t + rng.normal(scale=30, size=3),
                            rng.uniform(25, 45)))
            cell.mitos.append(Mito(points, radius, axis, period, rng.uniform(0, 1), dna))

    # Lysosomes (dense, dark) and multivesicular bodies (internal vesicles): similar size and shape.
    def internal_spheres(radius, count, small):
        spheres = []
        for _ in range(count * 6):
            r = rng.uniform(*small)
            offset = rng.normal(size=3)
            offset = _unit(offset) * rng.uniform(0, radius - r - MEMBRANE - 10)
            if all(np.linalg.norm(offset - o) > r + q + 6 for o, q in spheres):
                spheres.append((offset, r))
            if len(spheres) >= count:
                break
        return spheres

    for kind, count, size in (("lysosome", rng.integers(2, 6), (110, 280)), ("mvb", rng.integers(1, 4), (120, 230))):
        placed = 0
        for _ in range(300):
            if placed >= count:
                break
            point, radius = uniform_points(1)[0], rng.uniform(*size)
            if inside_cytoplasm(point[None], radius + 50) and occupied.free(point[None], radius, 30):
                occupied.add(point[None], radius)
                placed += 1
                if kind == "mvb":
                    ilvs = internal_spheres(radius, rng.integers(10, 24), (18, 32))
                    cell.mvbs.append((point, radius, [(point + o, r) for o, r in ilvs]))
                else:
                    granules = internal_spheres(radius, rng.integers(3, 9), (18, 50))
                    rings = internal_spheres(radius, rng.integers(1, 4), (18, 32)) if rng.random() < 0.35 else []
                    cell.lysosomes.append(
                        (point, radius, [(point + o, r) for o, r in granules], [(point + o, r) for o, r in rings])
                    )

    # Vesicles: clusters (Golgi-like region near the nucleus, under the plasma membrane) plus scattered ones.
    cluster_centres = [uniform_points(1)[0] for _ in range(rng.integers(2, 4))]
    target = rng.integers(50, 90)
    for attempt in range(1500):
        if len(cell.vesicles) >= target:
            break
        if attempt % 2 and cluster_centres:
            point = cluster_centres[attempt % len(cluster_centres)] + rng.normal(scale=220, size=3) * np.array(
                [0.6, 1, 1])
        else:
            point = uniform_points(1)[0]
        radius = float(np.clip(rng.lognormal(np.log(34), 0.3), 18, 75))
        if inside_cytoplasm(point[None], radius + 25) and occupied.free(point[None], radius, 12):
            occupied.add(point[None], radius)
            cell.vesicles.append((point, radius))

    # ER: persistent random walks. Tubes wander in 3D; sheets (cisternae standing across the slice plane, i.e.
    # capsules extruded along z) run parallel to the nucleus, so they show as long double membranes.
    for walker in range(rng.integers(110, 150)):
        sheet = walker % 4 == 0
        radius = rng.uniform(11, 18) if sheet else rng.uniform(16, 26)
        half_height = rng.uniform(40, 130) if sheet else 0.0
        tilt = np.array([0.0, 1, 1]) if sheet else np.array([0.4, 1, 1])
        if walker % 2 == 0:
            start = nucleus_centre + rng.normal(size=3) * radii
            start = _project_to_surface(cell.nucleus_sdf, start[None], rng.uniform(60, 200))[0]
            normal = _unit(start - nucleus_centre)
            heading = _unit(np.cross(normal, rng.normal(size=3)) * tilt)
        else:
            start = uniform_points(1)[0]
            heading = _unit(rng.normal(size=3) * tilt)
        if not (inside_cytoplasm(start[None], radius + 35) and occupied.free(start[None], radius + half_height, 20)):
            continue
        point = start
        for _ in range(rng.integers(4, 12)):
            for _ in range(4):
                candidate_heading = _unit(heading + rng.normal(scale=0.45, size=3) * tilt)
                end = point + candidate_heading * rng.uniform(90, 240)
                samples = np.linspace(point, end, 4)
                if sheet:
                    samples = np.concatenate([samples + [half_height, 0, 0], samples - [half_height, 0, 0]])
                if inside_cytoplasm(samples, radius + 35) and occupied.free(samples, radius, 20):
                    cell.er.append((point, end, radius, half_height))
                    point, heading = end, candidate_heading
                    break
            else:
                break

    # Microtubules: long straight tubes, broken where they would cross an organelle or the nucleus.
    for _ in range(rng.integers(30, 45)):
        axis = _unit(rng.normal(size=3) * np.array([0.15, 1, 1]))
        middle, length = uniform_points(1)[0], rng.uniform(900, 2800)
        samples = middle + np.linspace(-0.5, 0.5, int(length / 15))[:, None] * axis * length
        P = _points(samples)
        ok = (cell.boundary_sdf(P) < -40) & (cell.nucleus_sdf(P) > 40)
        if len(occupied.radii):
            d = np.linalg.norm(samples[:, None] - occupied.centres[None], axis=-1)
            ok &= np.all(d > occupied.radii[None] + MT_OUTER + 10, axis=1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
        for first, stop in zip(edges[::2], edges[1::2]):
            if stop - first >= 4:
                cell.microtubules.append((samples[first], samples[stop - 1]))
    return cell


# ---------------------------------------------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------------------------------------------


def _box(centre, radius):
    return np.asarray(centre) - radius, np.asarray(centre) + radius


def render_labels(cell: Cell, grid: Grid) -> np.ndarray:
    """COSEM label map of ``cell`` on ``grid`` (``uint8``; every voxel gets a class)."""
    labels = np.full(grid.shape, CYTO, dtype=np.uint8)

    for a, b in cell.microtubules:
        window = grid.window(np.minimum(a, b) - MT_OUTER, np.maximum(a, b) + MT_OUTER)
        if window:
            slices, P = window
            d = _capsule(P, a, b, 0.0)
            sub = labels[slices]
            sub[d < MT_OUTER] = MT_OUT
            sub[d < MT_INNER] = MT_IN

    er_distance = np.full(grid.shape, np.inf, dtype=np.float32)
    for a, b, radius, half_height in cell.er:
        window = grid.window(*_er_box(a, b, radius, half_height, MEMBRANE))
        if window:
            slices, P = window
            np.minimum(er_distance[slices], _er_sdf(P, a, b, radius, half_height), out=er_distance[slices])
    labels[er_distance < MEMBRANE] = ER_MEM
    labels[er_distance < 0] = ER_LUM

    for spheres, membrane_id, lumen_id in (
        (cell.vesicles, VES_MEM, VES_LUM),
        ([(c, r) for c, r, _ in cell.mvbs], MVB_MEM, MVB_LUM),
        ([(c, r) for c, r, _, _ in cell.lysosomes], LYSO_MEM, LYSO_LUM),
    ):
        for centre, radius in spheres:
            window = grid.window(*_box(centre, radius))
            if window:
                slices, P = window
                d = _sphere(P, centre, radius)
                sub = labels[slices]
                sub[d < 0] = membrane_id
                sub[d < -MEMBRANE] = lumen_id

    for mito in cell.mitos:
        window = grid.window(*mito.bounds())
        if window:
            slices, P = window
            d = mito.sdf(P)
            sub = labels[slices]
            sub[d < 0] = MITO_MEM
            matrix = d < -MITO_RIM
            sub[matrix] = MITO_LUM
            for centre, radius in mito.dna:
                sub[matrix & (_sphere(P, centre, radius) < 0)] = MITO_DNA
            sub[matrix & (mito.cristae_distance(P) < MEMBRANE / 2)] = MITO_MEM

    low = cell.nucleus_centre - cell.nucleus_radii - 300
    window = grid.window(low, cell.nucleus_centre + cell.nucleus_radii + 300)
    if window:
        slices, P = window
        d = cell.nucleus_sdf(P)
        sub = labels[slices]
        sub[d < 0] = NE_MEM
        sub[d < -MEMBRANE] = NE_LUM
        sub[d < -(MEMBRANE + NE_LUMEN)] = NE_MEM
        inside = d < -NE_TOTAL
        sub[inside] = NUCPL
        sub[inside & (d > -NE_TOTAL - cell.chromatin_depth(P))] = HCHROM
        for centre, radius in cell.chromatin:
            part = grid.window(*_box(centre, radius))
            if part:
                local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part[0], slices))
                region = sub[local]
                region[inside[local] & (_sphere(part[1], centre, radius) < 0)] = HCHROM
        for centre, radius in cell.nucleoli:
            sub[inside & (_sphere(P, centre, radius) < 0)] = NUCLEO
        envelope = (d < 4) & (d > -NE_TOTAL - 4)
        for centre in cell.pores:
            part = grid.window(*_box(centre, 45.0))
            if part:
                local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part[0], slices))
                distance = _sphere(part[1], centre, 0.0)
                region = sub[local]
                band = envelope[local]
                region[band & (distance < 45.0)] = NP_OUT
                region[band & (distance < 20.0)] = NP_IN

    boundary = cell.cell_sdf(grid)
    labels[(boundary < 0) & (boundary > -PM_THICKNESS)] = PM
    labels[boundary >= 0] = ECS
    return labels


def _textures(rng, shape, scale):
    """Fine grain, coarse mottling and ribosome-like speckles (roughly unit amplitude)."""
    sigma_fine = 6.0 / scale
    fine = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_fine)
    fine /= max(float(fine.std()), 1e-6)
    mottle = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 22.0 / scale)
    mottle /= max(float(mottle.std()), 1e-6)
    spikes = (rng.random(shape, dtype=np.float32) < 0.012).astype(np.float32)
    sigma_speckle = 5.0 / scale
    speckle = ndimage.gaussian_filter(spikes, sigma_speckle)
    speckle /= float(ndimage.gaussian_filter(np.pad(np.ones((1, 1, 1), np.float32), 6), sigma_speckle).max())
    return fine, mottle, np.minimum(speckle, 1.5)


def render_em(cell: Cell, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """FIB-SEM-like 8-bit image of ``cell`` on ``grid``: dark membranes, textured grey cytoplasm, bright ECS."""
    scale = np.asarray(grid.scale, dtype=np.float64)
    h = float(scale[1:].min())
    fine, mottle, speckle = _textures(rng, grid.shape, scale)
    image = 150.0 + 7.0 * fine + 6.0 * mottle - 38.0 * speckle

    def alpha(d):
        return np.clip(0.5 - d / h, 0.0, 1.0)

    def line(d, width=4.5):
        return np.exp(-0.5 * (d / width) ** 2)

    def paint(slices, weight, value):
        image[slices] += weight * (value - image[slices])

    for a, b in cell.microtubules:
        window = grid.window(np.minimum(a, b) - 40, np.maximum(a, b) + 40)
        if window:
            slices, P = window
            d = _capsule(P, a, b, 0.0)
            image[slices] -= 42.0 * line(d, 9.0) - 12.0 * line(d, 3.5)

    er_distance = np.full(grid.shape, 1e6, dtype=np.float32)
    for a, b, radius, half_height in cell.er:
        window = grid.window(*_er_box(a, b, radius, half_height, 30))
        if window:
            slices, P = window
            np.minimum(er_distance[slices], _er_sdf(P, a, b, radius, half_height), out=er_distance[slices])
    near = er_distance < 40
    image[near] += alpha(er_distance[near]) * (136.0 + 5.0 * fine[near] - image[near])
    image[near] -= 62.0 * line(er_distance[near] - MEMBRANE / 2)

    for centre, radius in cell.vesicles:
        window = grid.window(*_box(centre, radius + 20))
        if window:
            slices, P = window
            d = _sphere(P, centre, radius)
            paint(slices, alpha(d), 182.0 + 4.0 * fine[slices])
            image[slices] -= 70.0 * line(d + MEMBRANE / 2)

    for centre, radius, ilvs in cell.mvbs:
        window = grid.window(*_box(centre, radius + 20))
        if window:
            slices, P = window
            d = _sphere(P, centre, radius)
            paint(slices, alpha(d), 136.0 + 6.0 * mottle[slices] + 5.0 * fine[slices])
            for ilv_centre, ilv_radius in ilvs:
                e = _sphere(P, ilv_centre, ilv_radius)
                paint(slices, alpha(e), 176.0)
                image[slices] -= 62.0 * line(e + 3.0, 4.0)
            image[slices] -= 72.0 * line(d + MEMBRANE / 2)

    for centre, radius, granules, rings in cell.lysosomes:
        window = grid.window(*_box(centre, radius + 20))
        if window:
            slices, P = window
            d = _sphere(P, centre, radius)
            paint(slices, alpha(d), 80.0 + 14.0 * mottle[slices] + 9.0 * fine[slices])
            for granule_centre, granule_radius in granules:
                paint(slices, alpha(_sphere(P, granule_centre, granule_radius)) * 0.8, 48.0)
            for ring_centre, ring_radius in rings:
                e = _sphere(P, ring_centre, ring_radius)
                paint(slices, alpha(e), 128.0)
                image[slices] -= 35.0 * line(e + 3.0, 4.0)
            image[slices] -= 60.0 * line(d + MEMBRANE / 2)

    for mito in cell.mitos:
        low, high = mito.bounds()
        window = grid.window(low - 12, high + 12)
        if window:
            slices, P = window
            d = mito.sdf(P)
            paint(slices, alpha(d), 114.0 + 5.0 * fine[slices] + 4.0 * mottle[slices])
            matrix = np.clip(-(d + MITO_RIM) / h, 0.0, 1.0)
            dna = sum((alpha(_sphere(P, c, r)) for c, r in mito.dna), np.zeros_like(d))
            image[slices] += np.minimum(dna, 1.0) * matrix * 26.0
            image[slices] -= matrix * 58.0 * line(mito.cristae_distance(P), 4.0)
            image[slices] -= 55.0 * line(d + 3.5, 3.8) + 50.0 * line(d + 12.5, 3.8)

    low = cell.nucleus_centre - cell.nucleus_radii - 300
    window = grid.window(low, cell.nucleus_centre + cell.nucleus_radii + 300)
    if window:
        slices, P = window
        d = cell.nucleus_sdf(P)
        inside = alpha(d + NE_TOTAL)
        paint(slices, inside, 170.0 + 8.0 * fine[slices] + 7.0 * mottle[slices] - 14.0 * speckle[slices])
        depth = cell.chromatin_depth(P)
        chromatin = alpha(-(d + NE_TOTAL + depth)) * np.clip(depth / 12.0, 0.0, 1.0)
        for centre, radius in cell.chromatin:
            part = grid.window(*_box(centre, radius + 10))
            if part:
                local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part[0], slices))
                chromatin[local] = np.maximum(chromatin[local], alpha(_sphere(part[1], centre, radius)))
        for centre, radius in cell.nucleoli:
            e = _sphere(P, centre, radius)
            paint(slices, alpha(e) * inside, 78.0 + 16.0 * fine[slices])
        paint(slices, chromatin * inside, 96.0 + 10.0 * mottle[slices] + 6.0 * fine[slices])
        pore = np.zeros_like(d)
        for centre in cell.pores:
            part = grid.window(*_box(centre, 60.0))
            if part:
                local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part[0], slices))
                pore[local] = np.maximum(pore[local], np.clip((45.0 - _sphere(part[1], centre, 0.0)) / h, 0, 1))
        envelope = 68.0 * (line(d + MEMBRANE / 2) + line(d + MEMBRANE * 1.5 + NE_LUMEN))
        image[slices] -= envelope * (1.0 - pore)
        band = np.clip(1.0 - np.abs(d + NE_TOTAL / 2) / (NE_TOTAL / 2 + 6), 0, 1)
        paint(slices, pore * band, 112.0)

    boundary = cell.cell_sdf(grid)
    image -= 14.0 * np.clip(1.0 + boundary / 140.0, 0.0, 1.0) * (boundary < 0)
    image += alpha(-boundary) * (207.0 + 3.0 * fine - image)
    image -= 95.0 * line(boundary + PM_THICKNESS / 2, 4.5)

    image = ndimage.gaussian_filter(image, 5.0 / scale)
    image += (3.0 + 0.55 * np.sqrt(np.clip(image, 0, None))) * rng.standard_normal(image.shape, dtype=np.float32)
    stripes = ndimage.gaussian_filter1d(rng.standard_normal(grid.shape[2]).astype(np.float32), 1.2)
    image += 4.0 * stripes[None, None, :] + rng.normal(0, 2.0, size=(grid.shape[0], 1, 1)).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def multiscales_attrs(name: str, scales: Sequence[Sequence[float]], translations: Sequence[Sequence[float]],
                      paths: Sequence[str] | None = None) -> dict:
    """OME-NGFF 0.4 ``multiscales`` attributes for levels ``s0, s1, ...`` (axes z y x in nanometres)."""
    paths = list(paths) if paths is not None else [f"s{i}" for i in range(len(scales))]
    datasets = [
        {
            "path": path,
            "coordinateTransformations": [
                {"type": "scale", "scale": [round(float(v), 6) for v in scale]},
                {"type": "translation", "translation": [round(float(v), 6) for v in translation]},
            ],
        }
        for path, scale, translation in zip(paths, scales, translations)
    ]
    axes = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]
    return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]}


def _write_multiscale(root, path, levels, scales, translations, attrs=None):
    group = root.require_group(path)
    for index, array in enumerate(levels):
        chunks = tuple(min(c, s) for c, s in zip(_CHUNKS, array.shape))
        group.create_array(f"s{index}", data=array, chunks=chunks, overwrite=True)
    group.attrs.update({**multiscales_attrs(path.rpartition("/")[2], scales, translations), **(attrs or {})})
    return group


@dataclass
class _CropRecord:
    name: str
    number: int
    start: np.ndarray  # EM s0 index of the crop's first voxel
    annotated: list
    labels_s1: np.ndarray  # COSEM ids at EM resolution (after unknown / generic-nucleus edits)


def _generate_cell(out_dir, name, cell_index, first_crop, config: SyntheticConfig, rng) -> list[_CropRecord]:
    import zarr

    em_scale = np.asarray(config.em_scale, dtype=np.float64)
    shape = config.volume_shape
    extent = em_scale * np.asarray(shape)
    cell = _draw_cell(rng, extent)

    em_grid = Grid(em_scale / 2, em_scale, shape)
    em = render_em(cell, em_grid, rng)
    em_s1 = em.reshape(shape[0] // 2, 2, shape[1] // 2, 2, shape[2] // 2, 2).mean(axis=(1, 3, 5))
    root = zarr.open_group(os.path.join(out_dir, f"{name}.zarr"), mode="w", zarr_format=2)
    _write_multiscale(root, EM_GROUP, [em, np.rint(em_s1).astype(np.uint8)], [em_scale, em_scale * 2],
                      [em_scale / 2, em_scale])

    rows, cols = _crop_grid(config.crops_per_cell)
    cz, cy, cx = config.crop_shape
    records = []
    for position in range(config.crops_per_cell):
        row, col = divmod(position, cols)
        jitter = config.margin // 2
        start = np.array([
            rng.integers(1, shape[0] - cz + 1),
            config.margin + row * (cy + config.margin) + rng.integers(-jitter, jitter + 1),
            config.margin + col * (cx + config.margin) + rng.integers(-jitter, jitter + 1),
        ])
        corner = start * em_scale
        crop_extent = np.asarray(config.crop_shape) * em_scale
        levels = []
        for factor in (2, 1):
            scale = em_scale / factor
            grid = Grid(corner + scale / 2, scale, (cz * factor, cy * factor, cx * factor))
            levels.append((render_labels(cell, grid), grid))

        annotated = set(GENERATED_IDS)
        if rng.random() < config.unannotated_fraction:
            annotated -= {ER_MEM, ER_LUM}
        if rng.random() < config.unannotated_fraction:
            annotated -= {MT_OUT, MT_IN}
        generic_nucleus = rng.random() < config.generic_nucleus_fraction
        band = None
        if rng.random() < config.unknown_band_fraction:
            axis = int(rng.integers(1, 3))
            width = rng.uniform(0.1, 0.25) * config.crop_shape[axis] * em_scale[axis]
            band = (axis, bool(rng.random() < 0.5), width)
        for labels, grid in levels:
            if generic_nucleus:
                labels[np.isin(labels, (HCHROM, NUCPL, NUCLEO))] = NUC
            if band is not None:
                axis, at_start, width = band
                coords = grid.origin[axis] + grid.scale[axis] * np.arange(grid.shape[axis])
                if at_start:
                    inside = coords < corner[axis] + width
                else:
                    inside = coords > corner[axis] + crop_extent[axis] - width
                index = [slice(None)] * 3
                index[axis] = inside
                labels[tuple(index)] = IGNORE_INDEX
        if generic_nucleus:
            annotated = (annotated - {HCHROM, NUCPL, NUCLEO}) | {NUC}
        crop_number = first_crop + position
        crop_name = f"crop{crop_number}"
        names = [COSEM_LABELS[i][0] for i in sorted(annotated)]
        crop_group = root.require_group(f"{CROP_ROOT}/{crop_name}")
        crop_group.attrs.update({
            "cellmap": {
                "annotation": {
                    "version": "0.1.1",
                    "name": crop_name,
                    "description": f"synthetic crop {crop_number} of {name}",
                    "created_by": [],
                    "created_with": ["dsp_monai.data.synthetic"],
                    "start_date": None,
                    "end_date": None,
                    "duration_days": None,
                    "protocol_uri": None,
                    "class_names": names,
                }
            }
        })
        scales = [levels[0][1].scale, levels[1][1].scale]
        _write_multiscale(
            root,
            f"{CROP_ROOT}/{crop_name}/all",
            [levels[0][0], levels[1][0]],
            scales,
            [levels[0][1].origin, levels[1][1].origin],
            attrs={"cellmap": {"annotation": {
                "class_name": "all",
                "annotation_type": {"type": "semantic_segmentation",
                                    "encoding": {"unknown": int(IGNORE_INDEX)}},
            }}},
        )
        records.append(_CropRecord(crop_name, crop_number, start, sorted(annotated), levels[1][0]))
    return records


CLASS_COLOURS = {
    "ecs": (0.35, 0.6, 1.0),
    "plasma_membrane": (1.0, 0.55, 0.0),
    "mito": (0.1, 0.75, 0.2),
    "vesicle": (0.95, 0.15, 0.15),
    "mvb": (0.6, 0.3, 0.9),
    "lysosome": (0.6, 0.35, 0.15),
    "er": (1.0, 0.3, 0.8),
    "nucleus": (0.95, 0.85, 0.2),
    "nuclear_envelope": (0.0, 0.85, 0.85),
    "microtubule": (1.0, 1.0, 0.0),
    "cytosol": (0.55, 0.65, 0.8),
}
"""Overlay colours of the contact sheet (other classes get tab20 colours)."""


def class_colours(class_names: Sequence[str]) -> np.ndarray:
    """The fixed RGB colours (C, 3), values in [0, 1], of a class table: :data:`CLASS_COLOURS` by name, matplotlib's
    tab20 colour of the class index for the other names (the contact sheet and the benchmark figures use them)."""
    import matplotlib

    fallback = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
    return np.array([CLASS_COLOURS.get(name, fallback[index % 20]) for index, name in enumerate(class_names)],
                    dtype=np.float64).reshape(len(class_names), 3)


def _contact_sheet(path, tiles, class_names, lut):
    """PNG grid: for each crop its middle z-slice, raw and with a coloured label overlay, and a legend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    palette = np.zeros((256, 3))
    opacity = np.full(256, 0.45)
    palette[:len(class_names)] = class_colours(class_names)
    if "cytosol" in class_names:
        opacity[class_names.index("cytosol")] = 0.15
    cols = 4
    rows = math.ceil(len(tiles) / cols)
    height, width = tiles[0][1].shape
    pad, caption = 4, 14
    mosaic = np.ones((rows * (height + pad + caption), cols * (2 * width + pad) + pad, 3))
    captions = []
    for index, (title, em, labels) in enumerate(tiles):
        row, col = divmod(index, cols)
        top = row * (height + pad + caption) + caption
        left = col * (2 * width + pad) + pad
        grey = np.repeat((em / 255.0)[..., None], 3, axis=-1)
        mapped = apply_lut(labels, lut)
        weight = opacity[mapped][..., None]
        overlay = (1 - weight) * grey + weight * palette[mapped]
        unknown = mapped == IGNORE_INDEX
        overlay[unknown] = 0.45 * grey[unknown] + 0.55
        mosaic[top:top + height, left:left + width] = grey
        mosaic[top:top + height, left + width:left + 2 * width] = overlay
        captions.append((left, top - 2, title))
    dpi, legend_width = 100, 190
    fig_height = max(mosaic.shape[0], 18 * (len(class_names) + 2))
    fig = plt.figure(figsize=((mosaic.shape[1] + legend_width) / dpi, fig_height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 1 - mosaic.shape[0] / fig_height, mosaic.shape[1] / (mosaic.shape[1] + legend_width),
                       mosaic.shape[0] / fig_height))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for left, top, title in captions:
        ax.text(left, top, title, fontsize=7, va="bottom", ha="left")
    handles = [Patch(color=palette[i], label=name) for i, name in enumerate(class_names)]
    handles.append(Patch(facecolor=(0.8, 0.8, 0.8), edgecolor="0.5", label="ignore (255)"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False,
               title="left: EM s0, right: labels", title_fontsize=8)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def generate_dataset(out_dir: str | os.PathLike, config: SyntheticConfig | None = None, progress: bool = True,
                     contact_sheet: bool = True) -> dict:
    """Generate a synthetic FIB-SEM dataset into ``out_dir`` (created; existing cell containers are overwritten).

    Args:
        out_dir: the output folder.
        config: sizes and seed; default :class:`SyntheticConfig`.
        progress: show a tqdm progress bar over cells.
        contact_sheet: also write ``contact_sheet.png``.

    Returns:
        A summary (also written to ``stats.json``): the config, paths, number of 2D slices, slice shape and the
        fraction of labelled pixels per class (label s1, after the look-up table) and of ignored pixels.

    Example:
        >>> summary = generate_dataset("/tmp/synthetic", SyntheticConfig(cells=1, crops_per_cell=1))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    config = config or SyntheticConfig()
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    children = np.random.SeedSequence(config.seed).spawn(config.cells)
    class_names = list(HELA2_CLASS_NAMES)
    lut = build_lut(class_names)
    items, tiles = [], []
    counts = np.zeros(256, dtype=np.int64)
    for cell_index in tqdm(range(config.cells), desc="synthetic cells", disable=not progress):
        name = f"cell_{cell_index:02d}"
        rng = np.random.default_rng(children[cell_index])
        records = _generate_cell(out_dir, name, cell_index, 1 + cell_index * config.crops_per_cell, config, rng)
        for record in records:
            mapped = apply_lut(record.labels_s1, lut, record.annotated)
            counts += np.bincount(mapped.ravel(), minlength=256)
            subvolume = f"{name}/{record.name}"
            for z in range(config.crop_shape[0]):
                selector = f"{name}.zarr?crop={record.name}&layer=%s&axis=z&index={z}"
                items.append({
                    "image": selector % "em",
                    "label": selector % "label",
                    "subvolume": subvolume,
                    "id": f"{subvolume}/z{z:03d}",
                })
            middle = config.crop_shape[0] // 2
            em_slice = _read_em_slice(out_dir, name, record, middle, config)
            labels = record.labels_s1[middle].copy()
            labels[~np.isin(labels, record.annotated)] = IGNORE_INDEX
            tiles.append((f"{subvolume}  z={middle}", em_slice, labels))
    datalist_path = save_datalist(
        os.path.join(out_dir, DATALIST_NAME),
        class_names,
        {"data": items},
        description=(
            f"dsp_monai synthetic FIB-SEM dataset (generator version {GENERATOR_VERSION}, seed {config.seed}): "
            "every z-slice of every crop; split by 'subvolume'. Load with "
            "dsp_monai.data.readers.OMEZarrReader(class_names=class_names)."
        ),
        metadata={"generator": "dsp_monai.data.synthetic", "version": GENERATOR_VERSION, "config": asdict(config)},
    )
    volume_datalist(datalist_path)
    if contact_sheet:
        _contact_sheet(os.path.join(out_dir, "contact_sheet.png"), tiles, class_names, lut)
    total = counts.sum()
    summary = {
        "config": asdict(config),
        "datalist": datalist_path,
        "slices": len(items),
        "slice_shape": list(config.crop_shape[1:]),
        "subvolumes": config.cells * config.crops_per_cell,
        "class_names": class_names,
        "class_fraction": {n: round(float(counts[i] / total), 5) for i, n in enumerate(class_names)},
        "ignore_fraction": round(float(counts[IGNORE_INDEX] / total), 5),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(os.path.join(out_dir, "stats.json"), {**summary, "datalist": DATALIST_NAME})
    return summary


def volume_datalist(datalist: str | os.PathLike) -> str:
    """Writes ``datalist_3d.json`` next to a synthetic slice datalist and returns its path: one item per crop (the
    whole 3D crop, ``cell_00.zarr?crop=crop1&layer=em``), in the same ``data`` pool with the same ``subvolume``
    names, so that an experiment over volumes splits the crops as the slice experiment does. Idempotent; datasets
    generated before the 3D datalist existed get it on first use.

    Raises:
        ValueError: when an item of the slice datalist does not name a z-slice of a crop.
    """
    from dsp_monai.data.datalist import load_datalist
    from dsp_monai.data.readers import parse_zarr_path

    datalist = os.path.abspath(os.fspath(datalist))
    path = os.path.join(os.path.dirname(datalist), VOLUME_DATALIST_NAME)
    if os.path.isfile(path):
        return path
    with open(datalist, encoding="utf-8") as handle:
        content = json.load(handle)
    items, class_names = load_datalist(datalist, "data", check_files=False)
    volumes: dict[str, dict] = {}
    for item in items:
        selector = parse_zarr_path(item["image"])
        if selector.crop is None or selector.axis != "z":
            raise ValueError(f"{datalist}: item {item.get('id')!r} is not a z-slice of a crop: {item['image']!r}")
        store = os.path.basename(os.path.normpath(selector.store))
        volumes.setdefault(item["subvolume"], {
            "image": f"{store}?crop={selector.crop}&layer=em",
            "label": f"{store}?crop={selector.crop}&layer=label",
            "subvolume": item["subvolume"],
            "id": item["subvolume"],
        })
    return save_datalist(
        path, class_names, {"data": list(volumes.values())},
        description=content.get("description", "").replace("every z-slice of every crop", "every crop as a volume"),
        metadata=content.get("metadata"),
    )


def ensure_default_volume_dataset(root: str | os.PathLike, config: SyntheticConfig | None = None,
                                  progress: bool = False) -> str:
    """:func:`ensure_default_dataset`, returning the path of its volume datalist (``datalist_3d.json``)."""
    return volume_datalist(ensure_default_dataset(root, config, progress))


def _read_em_slice(out_dir, name, record, z, config):
    import zarr

    array = zarr.open_array(os.path.join(out_dir, f"{name}.zarr", EM_GROUP, "s0"), mode="r")
    start = record.start
    cz, cy, cx = config.crop_shape
    return np.asarray(array[start[0] + z, start[1]:start[1] + cy, start[2]:start[2] + cx])


def default_dataset_dir(root: str | os.PathLike, config: SyntheticConfig | None = None) -> str:
    """Where :func:`ensure_default_dataset` keeps the dataset of ``config`` under ``root``.

    The name holds the generator version and the seed (``synthetic_fibsem_v1_seed0``), plus a hash of the
    configuration when it is not the default one.
    """
    config = config or SyntheticConfig()
    name = f"synthetic_fibsem_v{GENERATOR_VERSION}_seed{config.seed}"
    if config != SyntheticConfig(seed=config.seed):
        digest = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
        name += f"_{digest}"
    return os.path.join(os.path.abspath(os.fspath(root)), name)


def ensure_default_dataset(root: str | os.PathLike, config: SyntheticConfig | None = None,
                           progress: bool = False) -> str:
    """Generate the default dataset under ``root`` unless it is already there; return its datalist path.

    Safe to call repeatedly and from several processes: the dataset is written to a temporary folder next to its
    final place and renamed when complete, so an interrupted run never leaves a half-written dataset where a
    later call would take it for a finished one.

    Args:
        root: parent folder (created if needed).
        config: what to generate; default :class:`SyntheticConfig` (seed 0: 320 slices of 128 x 128).
        progress: show progress bars.

    Returns:
        The absolute path of the dataset's ``datalist.json``.
    """
    config = config or SyntheticConfig()
    final = default_dataset_dir(root, config)
    datalist = os.path.join(final, DATALIST_NAME)
    if os.path.isfile(datalist):
        return datalist
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    try:
        logger.info("generating the synthetic dataset in %s", final)
        generate_dataset(temporary, config, progress=progress)
        os.chmod(temporary, 0o755)  # mkdtemp makes it private
        try:
            os.rename(temporary, final)
        except OSError:
            if not os.path.isfile(datalist):
                raise
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
    return datalist


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dsp_monai.data.synthetic --out DIR [options]``."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m dsp_monai.data.synthetic",
        description="Generate a synthetic FIB-SEM organelle dataset in the OpenOrganelle zarr layout, with a "
        "datalist and a contact sheet.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--cells", type=int, default=defaults.cells, help="cells, one zarr each (default %(default)s)")
    parser.add_argument("--crops-per-cell", type=int, default=defaults.crops_per_cell,
                        help="annotated crops per cell (default %(default)s)")
    parser.add_argument("--crop-shape", type=int, nargs=3, default=list(defaults.crop_shape), metavar=("Z", "Y", "X"),
                        help="crop size in EM s0 voxels (default %(default)s)")
    parser.add_argument("--no-contact-sheet", action="store_true", help="skip contact_sheet.png")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        parser.error(f"{args.out} exists and is not empty; pass --overwrite or choose another folder.")
    config = SyntheticConfig(seed=args.seed, cells=args.cells, crops_per_cell=args.crops_per_cell,
                             crop_shape=tuple(args.crop_shape))
    summary = generate_dataset(args.out, config, progress=not args.quiet, contact_sheet=not args.no_contact_sheet)
    logger.info(
        "wrote %d slices of %s from %d sub-volumes in %.1f s; datalist: %s",
        summary["slices"], "x".join(map(str, summary["slice_shape"])), summary["subvolumes"], summary["seconds"],
        summary["datalist"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
