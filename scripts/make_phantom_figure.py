"""Render docs/phantom_slices.png: axial slices of one CT and one MR phantom case.

Usage (from the repository root)::

    python scripts/make_phantom_figure.py [--out docs/phantom_slices.png] [--seed 0] [--shape 48 96 96]

Rows: CT image, CT labels, MR image, MR labels; columns: four axial slices from the apex (left)
to the great vessels (right). Slices are shown in radiological convention (patient's right on
the left of the image, anterior up). The cases are generated in memory with the same code and
seed streams as ``tcsa-uda phantom`` (case 0 of each domain).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from tcsa_uda.data.phantom import DEFAULT_SHAPE, case_seed, default_domains, generate_case
from tcsa_uda.data.phantom_anatomy import LABELS

CLASS_COLOURS = ["#00000000", "#e6550d", "#31a354", "#de2d26", "#756bb1"]  # by label id
WINDOWS = {"CT": (-250.0, 450.0)}  # HU window; other domains use the 0.5-99.5 percentiles


def radiological(slice_xy: np.ndarray) -> np.ndarray:
    """An (X, Y) RAS slice as a display image: rows anterior -> posterior, columns right -> left."""
    return slice_xy.T[::-1, ::-1]


def pick_slices(labels: np.ndarray) -> list[int]:
    """Four axial indices: apical, mid-ventricular, atrial and aortic (inferior to superior)."""
    area = {name: (labels == value).sum(axis=(0, 1)) for name, value in LABELS.items()}
    lv = np.nonzero(area["left ventricle blood cavity"])[0]
    la = np.nonzero(area["left atrium blood cavity"])[0]
    aorta_only = [k for k in np.nonzero(area["ascending aorta"])[0] if k > la.max()]
    picks = [
        int(lv.min() + 1),
        int(np.argmax(area["myocardium"])),
        int(np.argmax(area["left atrium blood cavity"])),
        int(aorta_only[len(aorta_only) // 3]) if aorta_only else int(np.argmax(area["ascending aorta"])),
    ]
    return sorted(picks)


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=root / "docs" / "phantom_slices.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("D", "H", "W"))
    args = parser.parse_args()
    depth, height, width = args.shape
    matplotlib.use("Agg")  # file output only, no display needed

    domains = default_domains()
    fig, axes = plt.subplots(2 * len(domains), 4, figsize=(10, 5.2 * len(domains)), squeeze=False)
    cmap = ListedColormap(CLASS_COLOURS)
    for d, domain in enumerate(domains):
        case = generate_case(domain, case_seed(args.seed, d, 0), (height, width, depth))
        lo, hi = WINDOWS.get(domain.name, tuple(np.percentile(case.image, [0.5, 99.5])))
        z_mm = case.affine[2, 3] + case.affine[2, 2] * np.arange(depth)
        for col, k in enumerate(pick_slices(case.labels)):
            image = radiological(case.image[:, :, k])
            labels = radiological(case.labels[:, :, k])
            for row, overlay in ((2 * d, False), (2 * d + 1, True)):
                ax = axes[row, col]
                ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                if overlay:
                    ax.imshow(
                        np.ma.masked_equal(labels, 0),
                        cmap=cmap,
                        vmin=0,
                        vmax=len(CLASS_COLOURS) - 1,
                        alpha=0.55,
                        interpolation="nearest",
                    )
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(f"{domain.name} {'labels' if overlay else 'image'}")
                if row == 2 * d:
                    ax.set_title(f"slice {k}, z = {z_mm[k]:+.0f} mm", fontsize=9)
    handles = [Patch(color=CLASS_COLOURS[v], label=name) for name, v in LABELS.items() if v > 0]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.suptitle(
        f"Phantom benchmark, seed {args.seed}, shape D H W = {depth} {height} {width} "
        "(radiological view: patient right on the left, anterior up)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
