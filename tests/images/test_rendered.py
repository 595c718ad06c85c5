"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3-4): what a viewer sees when it asks for images to show.

Expected pixels are computed here with numpy straight from PS3.3 C.11 (Modality LUT, then the VOI LUT Functions),
from the pixel data pydicom decodes, never from images.rendering itself.
"""

import io
import statistics
import time

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.storage import storages
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import BasicTextSRStorage, generate_uid

from images import rendering
from images.dicomweb.multipart import MultipartReader, parse_media_type
from images.ingest import ingest_instance
from images.sharing.services import share
from subscribers import services
from subscribers.models import AuditEvent
from tests.dicom_files import bundled_bytes, make_dataset, rle_compressed, series, synth_bytes, to_bytes

ACTION = "dicomweb.rendered"


@pytest.fixture(autouse=True)
def _cache_in_memory(settings):
    """Thumbnails cached in this process only, empty for each test (the default is a folder under var/)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "test-rendered"}}
    cache.clear()


@pytest.fixture
def token_a(admin_a, principal_a):
    return services.issue_token(actor=principal_a, membership=admin_a, name="viewer")[1]


@pytest.fixture
def token_b(admin_b, principal_b):
    return services.issue_token(actor=principal_b, membership=admin_b, name="viewer")[1]


@pytest.fixture
def store(principal_a):
    def store(data: bytes, principal=principal_a):
        return ingest_instance(principal=principal, data=data, source="test").instance

    return store


def get(client, path, token, **headers):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}", **headers)


def instance_url(instance, resource="rendered"):
    return f"{series_url(instance)}/instances/{instance.sop_instance_uid}/{resource}"


def series_url(instance, resource=""):
    url = f"{study_url(instance)}/series/{instance.series.series_instance_uid}"
    return f"{url}/{resource}" if resource else url


def study_url(instance, resource=""):
    url = f"/dicomweb/studies/{instance.study.study_instance_uid}"
    return f"{url}/{resource}" if resource else url


def pixels(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)))


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def parts_of(response) -> list[tuple[dict, bytes]]:
    media_type, params = parse_media_type(response["Content-Type"])
    assert media_type == "multipart/related"
    reader = MultipartReader(io.BytesIO(body_of(response)), params["boundary"].encode(), max_bytes=1 << 30)
    return [(part.headers, b"".join(part.chunks())) for part in reader]


def stored_values(data: bytes, frame: int = 0) -> np.ndarray:
    return pixel_array(io.BytesIO(data), index=frame)


def linear(values, center, width):
    """PS3.3 C.11.2.1.2.1 with an output range 0-255, written out piecewise."""
    values = values.astype(float)
    inside = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(values <= center - 0.5 - (width - 1) / 2, 0, np.where(values > center - 0.5 + (width - 1) / 2, 255, inside))


def assert_close(actual, expected, tolerance=1):
    difference = np.abs(actual.astype(int) - np.rint(expected).astype(int))
    assert difference.max() <= tolerance, (
        f"differs by up to {difference.max()} at {np.unravel_index(difference.argmax(), difference.shape)}"
    )


def with_new_uid(data: bytes) -> bytes:
    """The same object under another SOP Instance UID (pydicom's MR_small variants all share one)."""
    ds = dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return to_bytes(ds)


# --- The grayscale pipeline ----------------------------------------------------------------------------------------------


def test_ct_is_shown_through_its_rescale_and_its_own_window(client, token_a, store):
    data = synth_bytes("CT", rows=64, cols=64)  # Rescale Intercept -1024, Window 40/400 (HU)
    instance = store(data)
    expected = linear(stored_values(data) * 1.0 - 1024, 40, 400)

    png = get(client, instance_url(instance) + "?accept=image/png", token_a)
    jpeg = get(client, instance_url(instance), token_a)

    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert_close(pixels(png), expected)
    assert jpeg.status_code == 200 and jpeg["Content-Type"] == "image/jpeg"
    assert pixels(jpeg).shape == (64, 64)
    assert np.abs(pixels(jpeg).astype(int) - expected).mean() < 2


def test_ct_without_a_window_is_shown_from_its_darkest_to_its_brightest_value(client, token_a, store):
    data = bundled_bytes("CT_small.dcm")  # Rescale Intercept -1024, no Window Center/Width
    instance = store(data)
    hu = stored_values(data) * 1.0 - 1024
    expected = (hu - hu.min()) / (hu.max() - hu.min()) * 255

    response = get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png")

    assert response.status_code == 200
    assert_close(pixels(response), expected)
    assert pixels(response).min() == 0 and pixels(response).max() == 255


def test_mr_is_shown_with_its_own_window(client, token_a, store):
    data = bundled_bytes("MR_small.dcm")  # no rescale, Window 600/1600
    instance = store(data)

    response = get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png")

    assert_close(pixels(response), linear(stored_values(data), 600, 1600))


def test_a_window_asked_for_replaces_the_images_own_and_follows_its_function(client, token_a, store):
    data = bundled_bytes("CT_small.dcm")
    instance = store(data)
    hu = stored_values(data) * 1.0 - 1024
    default = pixels(get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png"))

    windowed = pixels(get(client, instance_url(instance) + "?window=40,400,linear", token_a, HTTP_ACCEPT="image/png"))
    assert not np.array_equal(windowed, default)
    assert_close(windowed, linear(hu, 40, 400))

    two_values = pixels(get(client, instance_url(instance) + "?window=40,400", token_a, HTTP_ACCEPT="image/png"))
    assert np.array_equal(two_values, windowed)  # linear is the default function

    exact = pixels(get(client, instance_url(instance) + "?window=40,400,linear-exact", token_a, HTTP_ACCEPT="image/png"))
    assert_close(exact, np.clip(((hu - 40) / 400 + 0.5) * 255, 0, 255))  # PS3.3 C.11.2.1.3.2

    sigmoid = pixels(get(client, instance_url(instance) + "?window=40,400,sigmoid", token_a, HTTP_ACCEPT="image/png"))
    assert_close(sigmoid, 255 / (1 + np.exp(-4 * (hu - 40) / 400)))  # PS3.3 C.11.2.1.3.1


def test_voi_lut_sequence_is_applied_when_the_image_has_no_window(client, token_a, store):
    ds = make_dataset("MR", rows=32, cols=32)  # 12-bit stored values, no rescale, no window
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 4095).astype(int)  # a non-linear VOI LUT with 12-bit output
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 12])
    item.add_new("LUTData", "US", lut.tolist())
    ds.VOILUTSequence = Sequence([item])
    data = to_bytes(ds)
    instance = store(data)

    shown = pixels(get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png"))

    assert_close(shown, lut[stored_values(data)] * 255 / 4095)


def test_monochrome1_is_shown_inverted(client, token_a, store):
    ds = make_dataset("CT", rows=64, cols=64)
    normal = store(to_bytes(ds))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    inverted = store(to_bytes(ds))

    shown = pixels(get(client, instance_url(normal), token_a, HTTP_ACCEPT="image/png")).astype(int)
    shown_inverted = pixels(get(client, instance_url(inverted), token_a, HTTP_ACCEPT="image/png")).astype(int)

    assert shown.std() > 10
    assert np.array_equal(shown_inverted, 255 - shown)


def test_enhanced_multiframe_uses_each_frames_rescale_and_window(client, token_a, store):
    """Functional groups (PS3.3 C.7.6.16): shared Pixel Value Transformation, a Frame VOI LUT per frame."""
    ds = make_dataset("CT", rows=32, cols=32, frames=2)
    del ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType, ds.WindowCenter, ds.WindowWidth
    transformation = Dataset()
    transformation.RescaleIntercept, transformation.RescaleSlope, transformation.RescaleType = -1024, 1, "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transformation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for center, width in ((40, 400), (400, 2000)):
        voi, group = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    data = to_bytes(ds)
    instance = store(data)

    for frame, (center, width) in ((1, (40, 400)), (2, (400, 2000))):
        shown = pixels(get(client, instance_url(instance, f"frames/{frame}/rendered"), token_a, HTTP_ACCEPT="image/png"))
        assert_close(shown, linear(stored_values(data, frame=frame - 1) * 1.0 - 1024, center, width))


# --- Colour and compressed pixel data ------------------------------------------------------------------------------------


def test_rgb_ultrasound_is_shown_in_colour(client, token_a, store):
    data = bundled_bytes("examples_rgb_color.dcm")
    instance = store(data)

    response = get(client, instance_url(instance) + "?window=40,400", token_a, HTTP_ACCEPT="image/png")  # colour ignores windows

    shown = pixels(response)
    assert shown.shape == (240, 320, 3)
    assert np.count_nonzero((shown[..., 0] != shown[..., 1]) | (shown[..., 1] != shown[..., 2])) > 1000
    assert np.array_equal(shown, stored_values(data))
    jpeg = pixels(get(client, instance_url(instance), token_a))
    assert jpeg.shape == (240, 320, 3)


def test_palette_colour_is_shown_through_its_palette(client, token_a, store):
    data = bundled_bytes("examples_palette.dcm")  # 16-bit palette entries
    instance = store(data)

    shown = pixels(get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png"))

    ds = dcmread(io.BytesIO(data))
    assert shown.shape == (*ds.pixel_array.shape, 3)
    assert_close(shown, apply_color_lut(ds.pixel_array, ds) / 257)


@pytest.mark.parametrize("compressed_name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_compressed_instance_renders_like_its_uncompressed_twin(client, token_a, store, compressed_name):
    plain = store(bundled_bytes("MR_small.dcm"))
    compressed = store(with_new_uid(bundled_bytes(compressed_name)))
    assert compressed.transfer_syntax_uid != plain.transfer_syntax_uid

    shown = get(client, instance_url(plain), token_a, HTTP_ACCEPT="image/png")
    shown_compressed = get(client, instance_url(compressed), token_a, HTTP_ACCEPT="image/png")

    assert np.array_equal(pixels(shown_compressed), pixels(shown))


def test_rle_compressed_ct_renders_like_its_uncompressed_twin(client, token_a, store):
    ds = make_dataset("CT", rows=64, cols=64)
    plain = store(to_bytes(ds))
    twin = rle_compressed(ds)
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    compressed = store(to_bytes(twin))

    expected = pixels(get(client, instance_url(plain), token_a, HTTP_ACCEPT="image/png"))
    assert np.array_equal(pixels(get(client, instance_url(compressed), token_a, HTTP_ACCEPT="image/png")), expected)


def test_deflated_instance_is_inflated_and_rendered(client, token_a, store):
    data = bundled_bytes("image_dfl.dcm")  # Deflated Explicit VR Little Endian, 8-bit, values 0-255
    instance = store(data)

    shown = pixels(get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png"))

    assert np.array_equal(shown, dcmread(io.BytesIO(data)).pixel_array)


def test_frames_of_a_multiframe_jpeg_instance_are_rendered_one_by_one(client, token_a, store):
    data = bundled_bytes("examples_ybr_color.dcm")  # 30 frames, JPEG Baseline, YBR_FULL_422
    instance = store(data)

    first = get(client, instance_url(instance, "frames/1/rendered"), token_a, HTTP_ACCEPT="image/png")
    second = get(client, instance_url(instance, "frames/2/rendered"), token_a, HTTP_ACCEPT="image/png")

    assert first.status_code == second.status_code == 200
    assert pixels(first).shape == (240, 320, 3)
    assert not np.array_equal(pixels(first), pixels(second))
    assert np.array_equal(pixels(second), stored_values(data, frame=1))  # decoded and converted to RGB by pydicom
    # The instance itself, asked for as one image, is its first frame.
    assert np.array_equal(pixels(get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/png")), pixels(first))


# --- Viewport --------------------------------------------------------------------------------------------------------


def test_viewport_scales_the_image_keeping_its_aspect_ratio(client, token_a, store):
    instance = store(bundled_bytes("CT_small.dcm"))  # 128 x 128
    url = instance_url(instance)

    assert pixels(get(client, url + "?viewport=64,64", token_a)).shape == (64, 64)
    assert pixels(get(client, url + "?viewport=100,32", token_a)).shape == (32, 32)
    assert pixels(get(client, url + "?viewport=256,256", token_a)).shape == (256, 256)


def test_viewport_source_region_crops_and_negative_sizes_flip(client, token_a, store):
    instance = store(bundled_bytes("CT_small.dcm"))
    url = instance_url(instance)
    whole = pixels(get(client, url, token_a, HTTP_ACCEPT="image/png"))

    quadrant = pixels(get(client, url + "?viewport=64,64,0,0,64,64", token_a, HTTP_ACCEPT="image/png"))
    lower_right = pixels(get(client, url + "?viewport=64,64,64,64,,", token_a, HTTP_ACCEPT="image/png"))
    mirrored = pixels(get(client, url + "?viewport=128,128,0,0,-128,128", token_a, HTTP_ACCEPT="image/png"))

    assert np.array_equal(quadrant, whole[:64, :64])
    assert np.array_equal(lower_right, whole[64:, 64:])
    assert np.array_equal(mirrored, whole[:, ::-1])


# --- Multipart answers: frame lists, series, studies --------------------------------------------------------------------


def test_a_list_of_frames_is_answered_with_one_part_per_frame(client, token_a, store):
    instance = store(bundled_bytes("examples_ybr_color.dcm"))

    response = get(client, instance_url(instance, "frames/3,1/rendered"), token_a, HTTP_ACCEPT='multipart/related; type="image/png"')

    assert response.status_code == 200
    parts = parts_of(response)
    assert [headers["content-location"].rsplit("/", 3)[-2] for headers, _ in parts] == ["3", "1"]
    alone = pixels(get(client, instance_url(instance, "frames/3/rendered"), token_a, HTTP_ACCEPT="image/png"))
    assert parts[0][0]["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(parts[0][1]))), alone)


def test_series_and_study_are_rendered_as_multipart_with_one_part_per_instance(client, token_a, store):
    instances = [store(data) for data in series("CT", 3, rows=32, cols=32)]
    instance = instances[0]

    for url in (series_url(instance, "rendered"), study_url(instance, "rendered")):
        response = get(client, url, token_a)
        assert response.status_code == 200
        assert response["Content-Type"].startswith('multipart/related; type="image/jpeg"')
        parts = parts_of(response)
        assert len(parts) == 3
        assert {headers["content-location"].split("/instances/")[1].split("/")[0] for headers, _ in parts} == {
            i.sop_instance_uid for i in instances
        }
        assert all(Image.open(io.BytesIO(content)).format == "JPEG" for _, content in parts)

    png = get(client, series_url(instance, "rendered"), token_a, HTTP_ACCEPT='multipart/related; type="image/png"')
    assert all(Image.open(io.BytesIO(content)).format == "PNG" for _, content in parts_of(png))


def test_a_rendered_series_beyond_the_part_limit_is_cut_short_and_says_so(client, token_a, store, monkeypatch):
    monkeypatch.setattr("images.dicomweb.rendered.MAX_RENDERED_PARTS", 2)
    instances = [store(data) for data in series("CT", 3, rows=16, cols=16)]

    response = get(client, series_url(instances[0], "rendered"), token_a)

    assert response.status_code == 200
    assert len(parts_of(response)) == 2
    assert response["Warning"].startswith('299 medarchive "Only the first 2 of 3 frames')


# --- Thumbnails ------------------------------------------------------------------------------------------------------


def test_thumbnails_of_study_series_instance_and_frame_are_small_jpegs(client, token_a, store):
    instances = [store(data) for data in series("CT", 3, rows=256, cols=200)]
    middle = instances[1]
    urls = [study_url(middle, "thumbnail"), series_url(middle, "thumbnail"), instance_url(middle, "thumbnail")]
    urls.append(instance_url(middle, "frames/1/thumbnail"))

    answers = [get(client, url, token_a) for url in urls]

    for response in answers:
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG" and max(image.size) <= 128
        assert image.size == (100, 128)  # the aspect ratio is kept
    # Study and series stand for their middle image.
    assert answers[0].content == answers[1].content == answers[2].content


def test_thumbnails_are_served_from_the_cache(client, token_a, store):
    instance = store(synth_bytes("CT", rows=64, cols=64))
    first = get(client, instance_url(instance, "thumbnail"), token_a)
    storages["archive"].delete(instance.storage_name)  # nothing left to decode
    assert not storages["archive"].exists(instance.storage_name)

    again = get(client, instance_url(instance, "thumbnail"), token_a)

    assert again.status_code == 200 and again.content == first.content


def test_a_study_without_images_has_no_thumbnail(client, token_a, store):
    ds = make_dataset("OT")
    for keyword in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored"):
        delattr(ds, keyword)
    del ds.HighBit, ds.PixelRepresentation
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    report = store(to_bytes(ds))

    for url in (study_url(report, "thumbnail"), instance_url(report, "rendered"), series_url(report, "rendered")):
        response = get(client, url, token_a)
        assert response.status_code == 406, url
        assert response.json()["code"] == "not_renderable"


# --- HTTP caching ----------------------------------------------------------------------------------------------------


def test_etag_answers_304_to_a_viewer_that_has_the_image(client, token_a, store):
    instance = store(synth_bytes("CT", rows=64, cols=64))
    url = instance_url(instance)
    first = get(client, url, token_a)
    etag = first["ETag"]
    assert first["Cache-Control"].startswith("private") and "Accept" in first["Vary"]

    again = get(client, url, token_a, HTTP_IF_NONE_MATCH=etag)
    windowed = get(client, url + "?window=0,100", token_a, HTTP_IF_NONE_MATCH=etag)
    thumbnail = get(client, instance_url(instance, "thumbnail"), token_a)
    thumbnail_again = get(client, instance_url(instance, "thumbnail"), token_a, HTTP_IF_NONE_MATCH=f"W/{thumbnail['ETag']}")

    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert windowed.status_code == 200 and windowed["ETag"] != etag
    assert thumbnail_again.status_code == 304
    assert AuditEvent.objects.filter(action=ACTION, detail__not_modified=True).count() == 2


# --- Refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("window=40", "window"),
        ("window=abc,400", "window"),
        ("window=40,0,linear", "window"),
        ("window=40,400,gamma", "window"),
        ("viewport=64", "viewport"),
        ("viewport=0,64", "viewport"),
        ("viewport=64,64,0,0", "viewport"),
        ("viewport=99999,64", "viewport"),
        ("viewport=64,64,500,0,10,10", "viewport"),
        ("viewport=a,b", "viewport"),
        ("quality=0", "quality"),
        ("quality=101", "quality"),
        ("quality=high", "quality"),
        ("annotation=everything", "annotation"),
        ("iccprofile=cmyk", "iccprofile"),
    ],
)
def test_malformed_parameters_are_refused_naming_the_parameter(client, token_a, store, query, parameter):
    instance = store(synth_bytes("CT", rows=16, cols=16))

    response = get(client, f"{instance_url(instance)}?{query}", token_a)

    assert response.status_code == 400
    assert response.json()["code"] == f"invalid_{parameter}"
    assert parameter in response.json()["error"]
    assert not AuditEvent.objects.filter(action=ACTION).exists()


def test_frames_that_do_not_exist_are_refused(client, token_a, store):
    instance = store(synth_bytes("CT", rows=16, cols=16, frames=2))

    for frames, code in (("3", "invalid_frame"), ("0", "invalid_frames"), ("1,x", "invalid_frames")):
        for resource in ("rendered", "thumbnail"):
            response = get(client, instance_url(instance, f"frames/{frames}/{resource}"), token_a)
            assert response.status_code == 400, (frames, resource)
            assert response.json()["code"] == code
    assert get(client, instance_url(instance, "frames/2/rendered"), token_a).status_code == 200


def test_accept_that_cannot_be_met_is_406(client, token_a, store):
    instance = store(synth_bytes("CT", rows=16, cols=16))

    for accept in ("image/gif", "application/dicom", "video/mp4, image/gif;q=0.5"):
        response = get(client, instance_url(instance), token_a, HTTP_ACCEPT=accept)
        assert response.status_code == 406, accept
        assert response.json()["code"] == "not_acceptable"
    thumbnail = get(client, instance_url(instance, "thumbnail"), token_a, HTTP_ACCEPT='multipart/related; type="image/jpeg"')
    assert thumbnail.status_code == 406
    assert get(client, instance_url(instance), token_a, HTTP_ACCEPT="image/gif, image/*;q=0.5").status_code == 200


# --- Who sees what ---------------------------------------------------------------------------------------------------


def test_another_institution_gets_404_for_every_rendered_resource(client, token_b, store):
    instance = store(synth_bytes("CT", rows=16, cols=16))
    urls = [instance_url(instance, r) for r in ("rendered", "thumbnail", "frames/1/rendered", "frames/1/thumbnail")]
    urls += [series_url(instance, r) for r in ("rendered", "thumbnail")] + [study_url(instance, r) for r in ("rendered", "thumbnail")]

    for url in urls:
        response = get(client, url, token_b)
        assert response.status_code == 404, url
        assert instance.sop_instance_uid not in response.content.decode()
    assert not AuditEvent.objects.filter(action=ACTION).exists()


def test_anonymous_caller_is_asked_to_authenticate(client, store):
    instance = store(synth_bytes("CT", rows=16, cols=16))

    assert client.get(instance_url(instance)).status_code == 401


def test_shared_study_renders_for_the_receiver_and_is_audited_under_it(client, token_b, store, principal_a, inst_b):
    instance = store(synth_bytes("CT", rows=32, cols=32))
    share(principal=principal_a, study=instance.study, with_institution=inst_b)

    rendered = get(client, instance_url(instance), token_b)
    thumbnail = get(client, study_url(instance, "thumbnail"), token_b)

    assert rendered.status_code == 200 and thumbnail.status_code == 200
    events = AuditEvent.objects.filter(action=ACTION).order_by("pk")
    assert [(e.institution_id, e.detail["shared"], e.detail["resource"]) for e in events] == [
        (inst_b.pk, True, "rendered"),
        (inst_b.pk, True, "thumbnail"),
    ]
    assert events[0].detail["sop_instance_uid"] == instance.sop_instance_uid


def test_each_request_leaves_exactly_one_audit_event(client, token_a, store, inst_a):
    instances = [store(data) for data in series("CT", 3, rows=16, cols=16)]

    for url in (instance_url(instances[0]), series_url(instances[0], "rendered"), study_url(instances[0], "thumbnail")):
        before = AuditEvent.objects.filter(action=ACTION).count()
        body_of(get(client, url, token_a))
        assert AuditEvent.objects.filter(action=ACTION).count() == before + 1, url
    event = AuditEvent.objects.filter(action=ACTION, detail__level="series").get()
    assert event.institution == inst_a and event.detail["parts"] == 3 and event.detail["shared"] is False


# --- The module other features call --------------------------------------------------------------------------------------


def test_render_frame_gives_bytes_and_content_type_for_wado_uri_and_film_sheets(store):
    instance = store(synth_bytes("CT", rows=64, cols=48))

    data, content_type = rendering.render_frame(instance, 1, viewport=rendering.Viewport(width=None, height=32), fmt="png")
    thumbnail, thumbnail_type = rendering.thumbnail_for_series(instance.series)

    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (24, 32)
    assert thumbnail_type == "image/jpeg" and Image.open(io.BytesIO(thumbnail)).size == (48, 64)  # small ones are not enlarged
    with pytest.raises(rendering.FrameOutOfRange):
        rendering.render_frame(instance, 2)


def test_rendering_speed_of_a_512_ct_frame_is_reported(client, token_a, store, record_property):
    """Not an assertion: milliseconds per 512 x 512 CT frame go to the report, as the median of repeated runs (the
    machine may be busy). Service: open, decode, Modality LUT, window, JPEG; HTTP: the whole request, audit included."""
    instance = store(synth_bytes("CT", rows=512, cols=512))
    url = instance_url(instance)

    def median_ms(call, runs):
        call()  # warm up decoders and numpy
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    service = median_ms(lambda: rendering.render_frame(instance), 30)
    http = median_ms(lambda: get(client, url, token_a), 15)
    record_property("ms_per_512_ct_frame_service", round(service, 1))
    record_property("ms_per_512_ct_frame_http", round(http, 1))
    print(f"\nrendered 512x512 CT frame, JPEG q90: {service:.1f} ms (render_frame), {http:.1f} ms (GET .../rendered)")


@pytest.mark.django_db(transaction=True)
def test_dicomweb_client_gets_rendered_frames_and_thumbnails(live_server, inst_a):
    """The third-party DICOMweb client reads rendered images the way viewers do."""
    import io as _io

    import requests
    from dicomweb_client.api import DICOMwebClient
    from PIL import Image

    from images.ingest import ingest_instance
    from subscribers import services as subscriber_services
    from tests.dicom_files import synth_bytes
    from tests.factories import member, principal_of

    admin = member(inst_a, "render_admin")
    principal = principal_of(admin)
    raw = subscriber_services.issue_token(actor=principal, membership=admin, name="viewer")[1]
    instance = ingest_instance(principal=principal, data=synth_bytes("CT", rows=64, cols=64), source="test").instance
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    client = DICOMwebClient(url=live_server.url + "/dicomweb", session=session)
    study, series, sop = instance.study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid
    jpeg = client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",))
    png = client.retrieve_instance_frames_rendered(study, series, sop, frame_numbers=[1], media_types=("image/png",))
    assert Image.open(_io.BytesIO(jpeg)).size == (64, 64)
    decoded = Image.open(_io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.size == (64, 64) and len(set(decoded.getdata())) > 10
