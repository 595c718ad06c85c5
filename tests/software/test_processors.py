"""The built-in processing types, checked against an independent computation of what they should produce."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000, JPEGLSLossless

from software.processors.base import ProcessorError
from software.processors.derived import part10
from tests.dicom_files import make_dataset
from tests.software.dicom_checks import dciodvfy_errors, run_processor
from tests.software.volumes import volume, voxels_of


def reread(ds):
    meta = getattr(ds, "file_meta", None)
    syntax = meta.TransferSyntaxUID if meta is not None and "TransferSyntaxUID" in meta else "1.2.840.10008.1.2.1"
    return dcmread(io.BytesIO(part10(ds, syntax)))


def test_mip_of_a_series_equals_numpy_max_over_its_frames():
    sources = volume("CT", slices=9)
    [product] = run_processor("mip", sources)
    assert np.array_equal(reread(product).pixel_array, voxels_of(sources).max(axis=0))


def test_minip_and_mean_projection_equal_numpy_min_and_rounded_mean():
    sources = volume("MR", slices=6)
    voxels = voxels_of(sources)
    [minimum] = run_processor("minip", sources)
    [mean] = run_processor("meanip", sources)
    assert np.array_equal(reread(minimum).pixel_array, voxels.min(axis=0))
    assert np.array_equal(reread(mean).pixel_array, np.rint(voxels.mean(axis=0)).astype(np.uint16))


def test_mip_slabs_of_a_given_thickness_each_project_their_own_slices():
    sources = volume("CT", slices=10, spacing=2.5)
    voxels = voxels_of(sources)
    products = run_processor("mip", sources, {"slab_thickness_mm": 7.5})  # 3 slices per slab: 3 + 3 + 3 + 1
    assert [int(p.InstanceNumber) for p in products] == [1, 2, 3, 4]
    for index, product in enumerate(products):
        assert np.array_equal(reread(product).pixel_array, voxels[index * 3 : index * 3 + 3].max(axis=0))
        assert len(product.SourceImageSequence) == min(3, 10 - index * 3)
    assert float(products[0].SliceThickness) == pytest.approx(7.5)


def test_mpr_voxels_equal_the_source_volume_and_geometry_places_them():
    sources = volume("CT", slices=7, rows=24, columns=30, spacing=2.0, pixel_spacing=(0.8, 0.7))
    voxels = voxels_of(sources)  # z ascending
    products = run_processor("mpr", sources)
    coronal = sorted((p for p in products if "CORONAL" in p.ImageType), key=lambda p: int(p.InstanceNumber))
    sagittal = sorted((p for p in products if "SAGITTAL" in p.ImageType), key=lambda p: int(p.InstanceNumber))
    assert len(coronal) == 24 and len(sagittal) == 30
    for row, product in enumerate(coronal):
        assert np.array_equal(reread(product).pixel_array, voxels[::-1, row, :])
    for column, product in enumerate(sagittal):
        assert np.array_equal(reread(product).pixel_array, voxels[::-1, :, column])
    # The top-left voxel of coronal cut 5 is the top slice's voxel in row 5: x=-100, y=-80+5*0.8, z=10+6*2.
    assert [float(v) for v in coronal[5].ImagePositionPatient] == pytest.approx([-100.0, -76.0, 22.0])
    assert [float(v) for v in coronal[5].ImageOrientationPatient] == pytest.approx([1, 0, 0, 0, 0, -1])
    assert [float(v) for v in coronal[5].PixelSpacing] == pytest.approx([2.0, 0.7])
    assert [float(v) for v in sagittal[3].ImagePositionPatient] == pytest.approx([-100 + 3 * 0.7, -80.0, 22.0])
    assert coronal[0].SeriesInstanceUID != sagittal[0].SeriesInstanceUID


def test_mpr_refuses_a_volume_with_a_gap():
    sources = volume("CT", slices=6)
    del sources[2]
    with pytest.raises(ProcessorError, match="not evenly spaced"):
        run_processor("mpr", sources)


def test_denoise_lowers_the_noise_of_a_flat_image_and_keeps_its_level_size_and_type():
    source = make_dataset("CT", rows=64, cols=64)
    noisy = 1000 + np.random.default_rng(1).normal(0, 40, size=(64, 64))
    source.PixelData = np.clip(np.rint(noisy), 0, 4095).astype(np.uint16).tobytes()
    [product] = run_processor("denoise", [source])
    before, after = source.pixel_array.astype(float), reread(product).pixel_array
    assert after.shape == before.shape and after.dtype == np.uint16
    assert after.std() < before.std() * 0.5
    assert abs(after.mean() - before.mean()) < 5


def test_clahe_raises_local_contrast_within_the_source_value_range():
    source = make_dataset("MR", rows=64, cols=64, seed=5)
    [product] = run_processor("clahe", [source], {"clip_limit": 0.05})
    before, after = source.pixel_array.astype(float), reread(product).pixel_array.astype(float)
    assert after.min() >= before.min() and after.max() <= before.max()
    assert not np.array_equal(after, before)
    assert product.DerivationDescription.startswith("Contrast enhancement (CLAHE) (clahe 1.0); parameters")


def test_lossless_conversion_decodes_to_the_same_pixels_and_lossy_is_marked_lossy():
    source = make_dataset("CT", rows=64, cols=64, seed=9)
    [lossless] = run_processor("transcode", [source], {"transfer_syntax": "jpeg-ls-lossless"})
    [lossy] = run_processor("transcode", [source], {"transfer_syntax": "jpeg2000-lossy", "compression_ratio": 20})
    lossless, lossy = reread(lossless), reread(lossy)
    assert lossless.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(lossless.pixel_array, source.pixel_array)
    assert "LossyImageCompression" not in lossless
    assert lossy.file_meta.TransferSyntaxUID == JPEG2000
    assert lossy.LossyImageCompression == "01"
    assert lossy.LossyImageCompressionMethod == "ISO_15444_1"
    assert float(lossy.LossyImageCompressionRatio) > 5
    assert lossy.DerivationCodeSequence[0].CodeValue == "113040"


def test_every_product_passes_dciodvfy_and_names_its_type_version_and_parameters():
    ct = volume("CT", slices=5)
    runs = [
        ("mip", ct, {}),
        ("minip", ct, {"slab_thickness_mm": 5}),
        ("meanip", ct, {}),
        ("mpr", ct, {"step": 8}),
        ("denoise", ct[:1], {}),
        ("clahe", ct[:1], {}),
        ("deidentify", ct[:1], {"retain_dates": True, "clean_descriptors": True}),
        ("transcode", ct[:1], {"transfer_syntax": "jpeg2000-lossless"}),
        ("transcode", ct[:1], {"transfer_syntax": "jpeg-ls-near-lossless"}),
        ("transcode", ct[:1], {"transfer_syntax": "rle-lossless"}),
    ]
    assert not dciodvfy_errors(part10(ct[0])), "the source itself must be valid"
    for processor_id, sources, parameters in runs:
        for product in run_processor(processor_id, sources, parameters):
            syntax = product.file_meta.TransferSyntaxUID if hasattr(product, "file_meta") else "1.2.840.10008.1.2.1"
            assert dciodvfy_errors(part10(product, syntax)) == [], f"{processor_id} {parameters}"
            equipment = product.ContributingEquipmentSequence[-1]
            assert equipment.SoftwareVersions == f"{processor_id} 1.0"
            assert f"({processor_id} 1.0); parameters" in equipment.ContributionDescription
            if processor_id != "deidentify":
                assert list(product.ImageType[:2]) == ["DERIVED", "SECONDARY"]
                assert product.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
                assert {r.ReferencedSOPInstanceUID for r in product.SourceImageSequence} <= {s.SOPInstanceUID for s in sources}
                assert "DerivationCodeSequence" in product


def test_product_uids_depend_only_on_the_job_and_the_source():
    sources = volume("CT", slices=3)
    first = run_processor("mip", sources, job_id=7)
    again = run_processor("mip", sources, job_id=7)
    other_job = run_processor("mip", sources, job_id=8)
    assert part10(first[0]) == part10(again[0])
    assert first[0].SOPInstanceUID != other_job[0].SOPInstanceUID


def test_a_colour_image_is_refused_by_greyscale_filters_with_the_reason():
    from tests.dicom_files import bundled_path

    colour = dcmread(bundled_path("examples_rgb_color.dcm"))
    with pytest.raises(ProcessorError, match="greyscale"):
        run_processor("denoise", [colour])
