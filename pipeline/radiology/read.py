"""Read one radiology image (DICOM, PNG, JPEG) into grey intensities in [0, 1].

DICOM (pydicom): the chosen frame is decoded alone; the modality LUT (Modality LUT Sequence or
rescale slope/intercept) gives stored values → modality units (HU for CT); the VOI transform
(VOI LUT Sequence, else the file's window centre/width with its VOI LUT function) maps them to
display values, which are scaled to [0, 1]; MONOCHROME1 images (white = low values) are
inverted so that bright always means dense. Enhanced multi-frame files keep rescale, window and
pixel spacing in functional groups: the chosen frame's (per-frame, then shared) values are used.
Colour DICOM (RGB/YBR secondary captures) is converted to grey (Rec. 601 luma).
PNG/JPEG (Pillow): 8-bit grey as stored (value / 255); 16-bit grey windowed like a DICOM
without a window; colour images to grey.

Every problem with the file raises ``ImageError`` naming the file and the reason (no pixel
data, an unsupported transfer syntax, a compressed syntax whose decoder is not installed, a
missing frame, a corrupt file), so one bad image never stops a cohort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import RadiologyConfig

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class ImageError(RuntimeError):
    """A radiology image cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class RadiologyImage:
    """One decoded frame: intensities in [0, 1] (bright = dense) and where they came from."""

    grey: np.ndarray  # float32 [H, W] in [0, 1]
    kind: str  # e.g. "DICOM CT", "PNG"
    spacing_mm: tuple[float, float] | None  # (row, column) pixel spacing
    spacing_source: str  # PixelSpacing, ImagerPixelSpacing, "" (none)
    n_frames: int = 1
    frame: int = 0
    window: str = ""  # how values were mapped to [0, 1]
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.grey.shape[0])

    @property
    def width(self) -> int:
        return int(self.grey.shape[1])


def is_dicom(path: Path) -> bool:
    """By suffix, else by the ``DICM`` magic at byte 128 (files without a suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path, cfg: RadiologyConfig, frame: int | None = None) -> RadiologyImage:
    """Decode one frame of ``path`` (``frame`` overrides ``cfg.frame``); raises ``ImageError``."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "file not found")
    if not path.is_file():
        raise ImageError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file")
    index = cfg.frame if frame is None else int(frame)
    if index < 0:
        raise ImageError(path, f"frame {index} < 0")
    if is_dicom(path):
        return _read_dicom(path, cfg, index)
    return _read_bitmap(path, cfg, index)


# -- windowing without a file window -----------------------------------------------------------
def auto_window(values: np.ndarray, cfg: RadiologyConfig) -> tuple[np.ndarray, str]:
    """[0, 1] from raw values by ``cfg.window``: ``fixed`` (centre/width in the values' units),
    ``minmax``, else percentiles (``cfg.percentiles``)."""
    v = values.astype(np.float64)
    if cfg.window == "fixed":
        assert cfg.window_center is not None and cfg.window_width is not None
        lo = cfg.window_center - cfg.window_width / 2
        hi = cfg.window_center + cfg.window_width / 2
        how = f"fixed window C {cfg.window_center:g} W {cfg.window_width:g}"
    elif cfg.window == "minmax":
        lo, hi = float(v.min()), float(v.max())
        how = "min-max"
    else:
        lo, hi = (float(q) for q in np.percentile(v, cfg.percentiles))
        how = f"percentiles {cfg.percentiles[0]:g}-{cfg.percentiles[1]:g}"
    if hi <= lo:
        return np.zeros(v.shape, np.float32), how + " (constant image)"
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), how


# -- DICOM -------------------------------------------------------------------------------------
def _first(ds, sequence: str, keyword: str):
    """``ds.<sequence>[0].<keyword>`` or None."""
    seq = ds.get(sequence)
    if not seq:
        return None
    return seq[0].get(keyword)


def frame_view(ds, frame: int):
    """A flat dataset with the attributes the LUTs need for ``frame``: top-level ones,
    overridden by the shared then per-frame functional groups of enhanced multi-frame files."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for kw in (
        "PhotometricInterpretation",
        "BitsStored",
        "BitsAllocated",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "PixelSpacing",
        "ImagerPixelSpacing",
    ):
        if kw in ds:
            view[kw] = ds[kw]
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    for g in groups:  # later groups (per-frame) win
        for kw in ("RescaleSlope", "RescaleIntercept"):
            v = _first(g, "PixelValueTransformationSequence", kw)
            if v is not None:
                setattr(view, kw, v)
        for kw in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
            v = _first(g, "FrameVOILUTSequence", kw)
            if v is not None:
                setattr(view, kw, v)
        v = _first(g, "PixelMeasuresSequence", "PixelSpacing")
        if v is not None:
            view.PixelSpacing = v
    return view


def _spacing(view) -> tuple[tuple[float, float] | None, str]:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = view.get(kw)
        try:
            row, col = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col), kw
    return None, ""


def _voi_range(view) -> tuple[float, float]:
    """Output range of pydicom's windowing for this dataset (PS3.3 C.11.2.1.2)."""
    bits = int(view.get("BitsStored", 16))
    if view.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(view.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(view.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = view.get("RescaleSlope"), view.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def voi_lut_lookup(values: np.ndarray, item) -> np.ndarray:
    """A VOI LUT Sequence item applied to modality values → [0, 1] (PS3.3 C.11.2.1.1).

    Done here rather than with pydicom 3.0.2's ``apply_voi``: that indexes an 8-bit LUT with
    uint8 indices, so a LUT of more than 256 entries wraps around, and it truncates the float
    values a rescale produces."""
    n, first, bits = (int(v) for v in item.LUTDescriptor)
    n = n or 2**16
    elem = item["LUTData"]
    if elem.VR == "OW" or isinstance(elem.value, bytes | bytearray):
        table = np.frombuffer(elem.value, dtype="<u2")[:n]
    else:
        table = np.asarray(elem.value, dtype=np.int64)[:n]
    if len(table) < n:
        raise ValueError(f"LUT Data has {len(table)} entries, the descriptor says {n}")
    idx = np.clip(np.round(values).astype(np.int64) - first, 0, n - 1)
    return table[idx].astype(np.float64) / float(2**bits - 1)


def _read_dicom(path: Path, cfg: RadiologyConfig, frame: int) -> RadiologyImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_windowing, get_decoder, pixel_array

    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        raise ImageError(path, "not a DICOM file (no DICM preamble)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or damaged headers
        raise ImageError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from None
    modality = str(ds.get("Modality", "") or "").strip()
    kind = f"DICOM {modality}".strip()
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        what = f" ({sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise ImageError(path, f"DICOM without pixel data{what}: nothing to tile")
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is None:
        raise ImageError(path, "DICOM without a transfer syntax (no file meta information)")
    ts_name = f"{tsyntax.name} ({tsyntax})" if tsyntax.name != str(tsyntax) else str(tsyntax)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise ImageError(
            path, f"unsupported transfer syntax {ts_name}: no pixel data decoder exists for it"
        ) from None
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise ImageError(
            path,
            f"compressed transfer syntax {ts_name} but no decoder is "
            f"installed (install one of: {options})",
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame >= n_frames:
        raise ImageError(path, f"frame {frame} requested but the file has {n_frames} frame(s)")
    try:
        arr = pixel_array(ds, index=frame if n_frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - decoder errors on damaged pixel data
        raise ImageError(
            path, f"cannot decode the pixel data of frame {frame} ({type(exc).__name__}: {exc})"
        ) from None
    view = frame_view(ds, frame)
    photometric = str(view.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    notes = []
    if n_frames > 1:
        notes.append(f"frame {frame} of {n_frames}")
    if arr.ndim == 3:  # colour: pydicom returns RGB for RGB and YBR images
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        grey, how = auto_window(arr, cfg)
        notes.append(f"{photometric} converted to grey")
    elif arr.ndim != 2:
        raise ImageError(path, f"unexpected pixel array shape {arr.shape} for frame {frame}")
    else:
        grey, how = _dicom_grey(arr, view, cfg, path, apply_modality_lut, apply_windowing)
        if photometric == "MONOCHROME1":
            grey = 1.0 - grey
            notes.append("MONOCHROME1 inverted")
    spacing, source = _spacing(view)
    return RadiologyImage(
        grey=grey,
        kind=kind,
        spacing_mm=spacing,
        spacing_source=source,
        n_frames=n_frames,
        frame=frame,
        window=how,
        notes=notes,
    )


def _dicom_grey(
    arr: np.ndarray, view, cfg: RadiologyConfig, path: Path, modality_lut, windowing
) -> tuple[np.ndarray, str]:
    """Stored values → modality units → [0, 1] by the file's VOI (``auto``/``file``) or
    ``auto_window``."""
    try:
        values = modality_lut(arr, view)
    except Exception as exc:  # noqa: BLE001 - a malformed Modality LUT
        raise ImageError(path, f"cannot apply the modality LUT ({exc})") from None
    has_lut = bool(view.get("VOILUTSequence"))
    has_window = "WindowCenter" in view and "WindowWidth" in view
    if cfg.window in ("auto", "file") and (has_lut or has_window):
        idx = cfg.voi_index
        try:
            if has_lut:
                grey = voi_lut_lookup(values, view.VOILUTSequence[idx])
                return grey.astype(np.float32), f"VOI LUT {idx} of the file"
            out = windowing(np.asarray(values), view, index=idx).astype(np.float64)
        except (ValueError, IndexError, TypeError, AttributeError, KeyError) as exc:
            raise ImageError(path, f"cannot apply the VOI LUT / window {idx} ({exc})") from None
        lo, hi = _voi_range(view)
        c, w = view["WindowCenter"].value, view["WindowWidth"].value
        c = c[idx] if view["WindowCenter"].VM > 1 else c
        w = w[idx] if view["WindowWidth"].VM > 1 else w
        func = str(view.get("VOILUTFunction", "LINEAR") or "LINEAR")
        how = f"window of the file C {float(c):g} W {float(w):g} ({func})"
        return np.clip((out - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32), how
    if cfg.window == "file":
        raise ImageError(path, "radiology.window is 'file' but the DICOM has no VOI LUT or window")
    return auto_window(values, cfg)


# -- PNG / JPEG ------------------------------------------------------------------------------
def _read_bitmap(path: Path, cfg: RadiologyConfig, frame: int) -> RadiologyImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = im.format or path.suffix.lstrip(".").upper()
            n_frames = int(getattr(im, "n_frames", 1))
            if frame >= n_frames:
                raise ImageError(path, f"frame {frame} requested but the file has {n_frames}")
            if frame:
                im.seek(frame)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                values = np.asarray(im, dtype=np.float64)
            elif mode in ("L", "P", "1"):
                values = np.asarray(im.convert("L"), dtype=np.float64)
            else:  # RGB, RGBA, CMYK, LA, …: to grey (Rec. 601 luma)
                values = np.asarray(im.convert("L"), dtype=np.float64)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            path, f"unsupported or corrupt image ({type(exc).__name__}: {exc})"
        ) from None
    grey_modes = ("L", "I;16", "I;16B", "I;16L", "I", "F")
    notes = [] if mode in grey_modes else [f"{mode} to grey"]
    eight_bit = mode not in ("I;16", "I;16B", "I;16L", "I", "F")
    if eight_bit and cfg.window in ("auto", "file"):
        grey, how = (values / 255.0).astype(np.float32), "8-bit as stored"
    else:  # 16-bit or float: like a DICOM without a window
        use = (
            cfg
            if cfg.window not in ("auto", "file")
            else cfg.model_copy(update={"window": "percentile"})
        )
        grey, how = auto_window(values, use)
    return RadiologyImage(
        grey=grey,
        kind=str(fmt),
        spacing_mm=None,
        spacing_source="",
        n_frames=n_frames,
        frame=frame,
        window=how,
        notes=notes,
    )
