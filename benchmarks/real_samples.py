"""The shipped demosaicer and inpainter on the real samples; writes comparison pictures.

    python benchmarks/real_samples.py --data ../shared/data --out docs/images

* ``colorchecker_1920x1080_12bit_BGGR.raw`` (a real 12-bit BGGR sensor capture) demosaiced
  by ``default:demosaic`` through the engine, next to bilinear and Malvar 2004, with the
  same grey-world white balance and sRGB-like gamma for display
  (``colorchecker_demosaic.png``: a full view and 4x crops of the same area).
* ``landsat7_slcoff_2011_b3.tif`` with its real gap mask (inside the scene's footprint;
  the no-data frame around the rotated scene is left empty), filled by ``default:inpaint``
  next to biharmonic inpainting and the 1999 scene of the same path/row, taken before the
  scan-line corrector failed (``landsat7_gapfill.png``).  The 1999 grid differs slightly,
  so it is a visual reference, not a pixel-exact truth.

It also prints how smooth each result is across the filled stripes (mean absolute
difference between neighbouring rows inside the gaps, the same outside; a fill that
matches the scene's texture has about the outside value).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage import io as skio
from skimage.transform import resize

#: the shared data beside this checkout (``../shared/data`` from its root), wherever the script is run from
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _to_u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def side_by_side(panels: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """Panels of equal height joined left to right with white gaps."""
    white = np.ones((panels[0].shape[0], gap, *panels[0].shape[2:]))
    parts: list[np.ndarray] = []
    for p in panels:
        parts += [p, white]
    return np.concatenate(parts[:-1], axis=1)


def display_rgb(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Linear camera RGB in [0, 1] -> displayable: white-balance gains, exposure, gamma 1/2.2."""
    x = rgb * gains
    x = x / np.percentile(x, 99.5)
    return np.clip(x, 0, 1) ** (1 / 2.2)


def colorchecker(data: Path, out: Path, model: str) -> None:
    import napari_attnrestore as ar
    from napari_attnrestore.tasks import demosaic as dm

    raw = np.fromfile(data / "samples" / "colorchecker_1920x1080_12bit_BGGR.raw", dtype="<u2").reshape(1080, 1920)
    cfa = raw.astype(np.float32) / 4095.0
    ours = np.asarray(ar.restore(cfa, task="demosaic", model=model, cfa="BGGR", normalize="none", device="cpu").compute())
    results = {"bilinear": dm.bilinear_baseline(cfa, "BGGR"), "Malvar 2004": dm.malvar_baseline(cfa, "BGGR"), model: ours}
    gains = results["Malvar 2004"].reshape(-1, 3).mean(0)
    gains = gains.mean() / gains  # grey world, shared by all three
    views = {k: display_rgb(v, gains) for k, v in results.items()}
    y, x, s = 480, 730, 160  # a crop across patch edges, enlarged 4x (nearest) to show the colour fringes
    full = [resize(v, (270, 480), anti_aliasing=True) for v in views.values()]
    crops = [np.repeat(np.repeat(v[y : y + s // 4 * 2, x : x + s // 4 * 3], 4, 0), 4, 1)[:270, :480] for v in views.values()]
    rows = [side_by_side(fs) for fs in (full, crops)]
    skio.imsave(out / "colorchecker_demosaic.png", _to_u8(np.concatenate([rows[0], np.ones((6, rows[0].shape[1], 3)), rows[1]])),
                check_contrast=False)
    for k, v in results.items():
        lum = v @ np.array([0.299, 0.587, 0.114])
        chroma = np.abs(v - lum[..., None]).mean()
        print(f"colorchecker {k:>20s}: mean |RGB - luma| {chroma:.4f} (colour fringes raise it)")
    print(f"wrote {out / 'colorchecker_demosaic.png'} (top: {', '.join(results)}; bottom: 4x crops)")


def scene_footprint(valid: np.ndarray, gap: int = 9) -> np.ndarray:
    """The area a striped scene covers: its valid pixels with gaps up to ``gap`` pixels closed
    and enclosed holes filled (the no-data frame around a rotated scene stays outside)."""
    from scipy import ndimage as ndi

    return ndi.binary_fill_holes(ndi.binary_closing(valid, structure=np.ones((gap, gap), bool), border_value=0))


def landsat(data: Path, out: Path, model: str) -> None:
    import tifffile

    import napari_attnrestore as ar
    from napari_attnrestore.tasks.inpaint import biharmonic_baseline

    band = tifffile.imread(data / "samples" / "landsat7_slcoff_2011_b3.tif").astype(np.float32) / 255.0
    gaps = tifffile.imread(data / "samples" / "landsat7_slcoff_2011_b3_gapmask.tif") == 0
    footprint = scene_footprint(~gaps)
    gaps &= footprint  # fill the scan-line gaps, not the no-data frame around the scene
    before = tifffile.imread(data / "samples" / "landsat7_slcon_1999_b3.tif").astype(np.float32) / 255.0
    ours = np.asarray(ar.restore(band, task="inpaint", model=model, mask=gaps, normalize="none", device="cpu").compute())
    bih = biharmonic_baseline(band, gaps)
    shown = np.where(gaps, np.nan, band)
    lo, hi = np.nanpercentile(np.concatenate([band[~gaps], before.ravel()]), [1, 99])
    panels = [np.nan_to_num(shown, nan=0.0), bih, ours, resize(before, band.shape, anti_aliasing=True)]
    panels = [np.clip((p - lo) / (hi - lo), 0, 1) for p in panels]
    skio.imsave(out / "landsat7_gapfill.png", _to_u8(side_by_side(panels)), check_contrast=False)
    inside = gaps[1:] & gaps[:-1]
    scene = footprint[1:] & footprint[:-1] & ~(gaps[1:] | gaps[:-1])  # valid rows of the scene, not its frame
    for name, img in (("biharmonic", bih), (model, ours)):
        d = np.abs(np.diff(img, axis=0))
        print(f"landsat {name:>16s}: row-to-row |diff| inside gaps {d[inside].mean():.4f}, "
              f"valid scene rows {d[scene].mean():.4f}")
    print(f"wrote {out / 'landsat7_gapfill.png'} (gapped 2011, biharmonic, {model}, 1999 before the failure); "
          f"gaps cover {gaps.sum() / footprint.sum():.1%} of the scene")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED_DATA)
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    p.add_argument("--demosaic-model", default="default:demosaic")
    p.add_argument("--inpaint-model", default="default:inpaint")
    a = p.parse_args(argv)
    if not (a.data / "samples").exists():
        print(f"real_samples.py: {a.data / 'samples'} not found", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    colorchecker(a.data, a.out, a.demosaic_model)
    landsat(a.data, a.out, a.inpaint_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
