"""Open slides with openslide (vendor formats) or its image-slide path (PNG/JPEG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import openslide


class SlideError(RuntimeError):
    """A slide cannot be used; the message names the file and the reason.

    These errors are properties of the file: re-running on the same file fails the same way.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


Slide = openslide.AbstractSlide


def open_slide(path: str | Path) -> Slide:
    """Open a slide; raises ``SlideError`` for a missing, corrupt or unsupported file."""
    path = Path(path)
    if not path.exists():
        raise SlideError(path, "file not found")
    if not path.is_file():
        raise SlideError(path, "not a file")
    if path.stat().st_size == 0:
        raise SlideError(path, "empty file")
    try:
        slide = openslide.open_slide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        from pipeline.radiology.read import is_dicom

        if is_dicom(path):
            raise SlideError(
                path,
                "unsupported format for histology: a DICOM image (radiology "
                "images need modality: radiology)",
            ) from None
        raise SlideError(
            path, "unsupported format (not a slide or image openslide can read)"
        ) from None
    except openslide.OpenSlideError as exc:
        raise SlideError(path, f"corrupt slide ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad image
        raise SlideError(
            path, f"unsupported or corrupt file ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(slide, openslide.ImageSlide) and _says_aperio(path):
        slide.close()
        raise SlideError(
            path,
            "truncated or corrupt Aperio SVS: its header names the Aperio format but "
            "openslide cannot read its pyramid (an incomplete copy or download?)",
        )
    return slide


def _says_aperio(path: Path) -> bool:
    """Whether a file openslide itself refused is a TIFF whose ImageDescription is Aperio's:
    openslide reads every intact Aperio file, so this one is damaged (PIL opens the first
    directory of a truncated SVS and it would pass for a plain image)."""
    from PIL import Image

    with Image.open(path) as image:
        tags = getattr(image, "tag_v2", None)
        return tags is not None and str(tags.get(270, "")).startswith("Aperio")


def _float_prop(props: dict, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


@dataclass(frozen=True)
class SlideInfo:
    """What the tiler needs to know about a slide, read once from its header."""

    vendor: str
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None


def slide_info(slide: Slide) -> SlideInfo:
    props = dict(slide.properties)
    vendor = props.get(openslide.PROPERTY_NAME_VENDOR) or (
        "image" if isinstance(slide, openslide.ImageSlide) else "unknown"
    )
    width, height = slide.dimensions
    return SlideInfo(
        vendor=vendor,
        width=int(width),
        height=int(height),
        level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        mpp_x=_float_prop(props, openslide.PROPERTY_NAME_MPP_X),
        mpp_y=_float_prop(props, openslide.PROPERTY_NAME_MPP_Y),
        objective_power=_float_prop(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
    )
