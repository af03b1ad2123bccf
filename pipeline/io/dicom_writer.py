"""Write DICOM files (pydicom): the synthetic radiology cohort and test images.

A minimal but valid Part 10 file: file meta information (preamble, ``DICM``, transfer syntax),
patient/study/series/instance identifiers, the Image Pixel module and, when given, pixel
spacing, the modality rescale and a VOI window. Written atomically (temp + rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io.files import atomic_write

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def dicom_dataset(
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    spacing_mm: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    bits_stored: int | None = None,
    sop_class: str = CT_IMAGE_STORAGE,
    uid_seed: str = "",
    extra: dict[str, Any] | None = None,
):
    """A dataset holding ``pixels`` (uint8/uint16/int16 ``[H, W]`` or ``[frames, H, W]``),
    little-endian explicit VR, uncompressed."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"pixels must be uint8, uint16 or int16, got {pixels.dtype}")
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    rows, cols = pixels.shape[-2:]
    seed = uid_seed or None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[seed, "sop"] if seed else None)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"] if seed else None)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"] if seed else None)
    ds.PatientID = uid_seed or "anonymous"
    ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(rows), int(cols)
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if spacing_mm is not None:
        ds.PixelSpacing = [f"{float(spacing_mm[0]):g}", f"{float(spacing_mm[1]):g}"]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    return ds


def save_dicom(path: Path, ds) -> None:
    """Write a dataset as a Part 10 file (preamble + file meta), atomically."""
    atomic_write(Path(path), lambda tmp: ds.save_as(str(tmp), enforce_file_format=True))


def write_dicom(path: Path, pixels: np.ndarray, **kw: Any) -> None:
    """``dicom_dataset(pixels, **kw)`` written to ``path``."""
    save_dicom(path, dicom_dataset(pixels, **kw))
