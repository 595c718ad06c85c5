"""QIDO-RS (PS3.18 10.6) under /dicomweb/: what a viewer (OHIF), a script or dicomweb-client finds, and nothing more."""

import gzip
import json
from datetime import date

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pydicom.uid import generate_uid

from images.dicomweb import qido as qido_rs
from images.ingest import ingest_instance
from images.models import Study
from images.sharing.services import revoke, share
from subscribers import services
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.dicom_files import make_dataset, synth_bytes, to_bytes
from tests.factories import member, principal_of

# Tags of the answers (PS3.18 Tables 10.6.3-3, -4, -5).
PATIENT_NAME, PATIENT_ID, PATIENT_AGE, PATIENT_WEIGHT = "00100010", "00100020", "00101010", "00101030"
STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
STUDY_DATE, STUDY_TIME, STUDY_DESCRIPTION, MODALITIES = "00080020", "00080030", "00081030", "00080061"
MODALITY, SERIES_NUMBER, INSTANCE_NUMBER, KVP = "00080060", "00200011", "00200013", "00180060"
RETRIEVE_URL, AVAILABILITY, CHARSET = "00081190", "00080056", "00080005"
STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES = "00201206", "00201208", "00201209"
ROWS, COLUMNS, BITS_ALLOCATED, FRAMES, PIXEL_DATA = "00280010", "00280011", "00280100", "00280008", "7FE00010"

DICOM_JSON = "application/dicom+json"


def value(result, tag):
    return result[tag]["Value"][0]


def values(results, tag):
    return [value(result, tag) for result in results]


@pytest.fixture
def token_a(admin_a, principal_a):
    return services.issue_token(actor=principal_a, membership=admin_a, name="viewer")[1]


@pytest.fixture
def token_b(admin_b, principal_b):
    return services.issue_token(actor=principal_b, membership=admin_b, name="viewer")[1]


@pytest.fixture
def reader_b(inst_b):
    return member(inst_b, "reader_b", ["receive"])


@pytest.fixture
def reader_token_b(reader_b):
    return services.issue_token(actor=principal_of(reader_b), membership=reader_b, name="viewer")[1]


def qido(client, path, token=None, **params):
    extra = {key: params.pop(key) for key in list(params) if key.startswith("HTTP_")}
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get(f"/dicomweb/{path}", params, **extra)


def found(client, path, token, **params):
    response = qido(client, path, token, **params)
    assert response.status_code == 200, response.content
    return response.json()


def ingest(principal, modality="CT", **kwargs):
    return ingest_instance(principal=principal, data=synth_bytes(modality, rows=8, cols=8, **kwargs), source="test").instance


@pytest.fixture
def archive(principal_a):
    """Three patients of institution A; P1's study has a CT series of three instances and a PT series."""
    uids = {}
    for name, pid, day, modality, accession in [
        ("Doe^Jane", "P1", date(2026, 1, 5), "CT", "A100"),
        ("Doe^John", "P2", date(2026, 2, 10), "MR", "A200"),
        ("Smith^Anna", "P3", date(2026, 3, 15), "CT", "B300"),
    ]:
        study_uid, series_uid = generate_uid(), generate_uid()
        for number in (1, 2, 3) if pid == "P1" else (1,):
            ds = make_dataset(
                modality,
                rows=8,
                cols=8,
                patient_name=name,
                patient_id=pid,
                study_date=day,
                study_uid=study_uid,
                series_uid=series_uid,
                accession_number=accession,
                instance_number=number,
                study_description=f"Study of {pid}",
            )
            ds.PatientAge, ds.PatientWeight = "056Y", 71.5
            ingest_instance(principal=principal_a, data=to_bytes(ds), source="test")
        uids[pid] = study_uid
        uids[f"{pid}-series"] = series_uid
    uids["P1-pt-series"] = ingest(principal_a, "PT", patient_id="P1", study_uid=uids["P1"], series_number=2).series.series_instance_uid
    return uids


# --- Matching -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"PatientID": "P2"}, ["P2"]),
        ({"00100020": "P2"}, ["P2"]),
        ({"PatientName": "doe*"}, ["P2", "P1"]),
        ({"00100010": "*ANNA"}, ["P3"]),
        ({"StudyDate": "20260101-20260228"}, ["P2", "P1"]),
        ({"00080020": "20260301-"}, ["P3"]),
        ({"ModalitiesInStudy": "PT"}, ["P1"]),
        ({"00080061": "CT"}, ["P3", "P1"]),
        ({"AccessionNumber": "A*", "ModalitiesInStudy": "CT"}, ["P1"]),
        ({}, ["P3", "P2", "P1"]),
    ],
)
def test_study_search_matches_keywords_and_hex_tags_newest_first(client, token_a, archive, params, expected):
    assert values(found(client, "studies", token_a, **params), PATIENT_ID) == expected


def test_study_search_by_a_list_of_uids(client, token_a, archive):
    results = found(client, "studies", token_a, StudyInstanceUID=f"{archive['P1']}\\{archive['P3']}")
    assert sorted(values(results, STUDY_UID)) == sorted([archive["P1"], archive["P3"]])


def test_fuzzy_matching_finds_part_of_a_name_only_when_asked(client, token_a, archive):
    assert found(client, "studies", token_a, PatientName="oh", fuzzymatching="false") == []
    assert values(found(client, "studies", token_a, PatientName="oh", fuzzymatching="true"), PATIENT_ID) == ["P2"]


def test_nothing_matching_is_200_with_an_empty_array(client, token_a, archive):
    response = qido(client, "studies", token_a, PatientID="NOBODY")
    assert response.status_code == 200 and response.json() == []
    assert response["Content-Type"] == DICOM_JSON


# --- What each result carries -------------------------------------------------------------------------------------------


def test_study_result_carries_the_required_attributes_with_their_vrs(client, token_a, archive):
    (study,) = found(client, "studies", token_a, PatientID="P1")
    assert response_keys_are_sorted(study)
    assert study[CHARSET] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert study[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert study[PATIENT_ID] == {"vr": "LO", "Value": ["P1"]}
    assert study["00100030"] == {"vr": "DA", "Value": ["19700101"]} and study["00100040"] == {"vr": "CS", "Value": ["F"]}
    assert study[STUDY_DATE] == {"vr": "DA", "Value": ["20260105"]} and study[STUDY_TIME] == {"vr": "TM", "Value": ["101500"]}
    assert study["00080050"] == {"vr": "SH", "Value": ["A100"]} and study["00200010"] == {"vr": "SH", "Value": ["1"]}
    assert study["00080090"] == {"vr": "PN", "Value": [{"Alphabetic": "Referrer^Rita"}]}
    assert study[STUDY_DESCRIPTION] == {"vr": "LO", "Value": ["Study of P1"]}
    assert study[MODALITIES] == {"vr": "CS", "Value": ["CT", "PT"]}
    assert study[STUDY_SERIES] == {"vr": "IS", "Value": [2]} and study[STUDY_INSTANCES] == {"vr": "IS", "Value": [4]}
    assert study[AVAILABILITY] == {"vr": "CS", "Value": ["ONLINE"]}
    assert study[STUDY_UID] == {"vr": "UI", "Value": [archive["P1"]]}
    assert study[RETRIEVE_URL] == {"vr": "UR", "Value": [f"http://testserver/dicomweb/studies/{archive['P1']}"]}
    # Nothing beyond the study level unless asked for.
    assert SERIES_UID not in study and MODALITY not in study and PATIENT_AGE not in study


def response_keys_are_sorted(result) -> bool:
    return list(result) == sorted(result)


def test_series_of_a_study_with_counts_in_series_number_order(client, token_a, archive):
    series = found(client, f"studies/{archive['P1']}/series", token_a)
    assert values(series, SERIES_UID) == [archive["P1-series"], archive["P1-pt-series"]]
    assert values(series, MODALITY) == ["CT", "PT"] and values(series, SERIES_NUMBER) == [1, 2]
    assert values(series, SERIES_INSTANCES) == [3, 1] and series[0][SERIES_INSTANCES]["vr"] == "IS"
    assert series[0]["0008103E"] == {"vr": "LO", "Value": ["CT series 1"]}
    assert values(series, STUDY_UID) == [archive["P1"]] * 2
    assert value(series[0], RETRIEVE_URL) == f"http://testserver/dicomweb/studies/{archive['P1']}/series/{archive['P1-series']}"
    # The study is named in the path: its other attributes are not repeated (PS3.18 10.6.3.3).
    assert PATIENT_ID not in series[0]


def test_series_search_across_studies_carries_the_study_attributes(client, token_a, archive):
    series = found(client, "series", token_a, Modality="CT")
    assert values(series, PATIENT_ID) == ["P3", "P1"]
    assert values(series, STUDY_UID) == [archive["P3"], archive["P1"]]
    assert value(series[1], STUDY_SERIES) == 2 and value(series[1], MODALITY) == "CT"
    assert values(found(client, "series", token_a, PatientID="P1", Modality="PT"), SERIES_UID) == [archive["P1-pt-series"]]


def test_instances_of_a_series_in_instance_number_order_with_image_attributes(client, token_a, archive):
    path = f"studies/{archive['P1']}/series/{archive['P1-series']}/instances"
    instances = found(client, path, token_a)
    assert values(instances, INSTANCE_NUMBER) == [1, 2, 3]
    first = instances[0]
    assert first[SOP_CLASS] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
    assert first[ROWS] == {"vr": "US", "Value": [8]} and first[COLUMNS] == {"vr": "US", "Value": [8]}
    assert first[BITS_ALLOCATED] == {"vr": "US", "Value": [16]} and first[FRAMES] == {"vr": "IS", "Value": [1]}
    assert first[AVAILABILITY]["Value"] == ["ONLINE"]
    assert value(first, STUDY_UID) == archive["P1"] and value(first, SERIES_UID) == archive["P1-series"]
    assert value(first, RETRIEVE_URL) == (
        f"http://testserver/dicomweb/studies/{archive['P1']}/series/{archive['P1-series']}/instances/{value(first, SOP_UID)}"
    )
    assert PATIENT_ID not in first and MODALITY not in first


def test_instances_of_a_study_and_of_the_whole_archive(client, token_a, archive):
    assert len(found(client, f"studies/{archive['P1']}/instances", token_a)) == 4
    ct_of_p1 = found(client, f"studies/{archive['P1']}/instances", token_a, Modality="CT")
    assert len(ct_of_p1) == 3 and value(ct_of_p1[0], MODALITY) == "CT" and PATIENT_ID not in ct_of_p1[0]
    everywhere = found(client, "instances", token_a, InstanceNumber="2")
    assert values(everywhere, PATIENT_ID) == ["P1"] and value(everywhere[0], SERIES_INSTANCES) == 3
    sop = value(everywhere[0], SOP_UID)
    assert values(found(client, "instances", token_a, SOPInstanceUID=sop), SOP_UID) == [sop]


# --- includefield ------------------------------------------------------------------------------------------------------


def test_ohif_study_list_call_gets_the_description_and_modality(client, token_a, archive):
    response = client.get(
        "/dicomweb/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060",
        HTTP_AUTHORIZATION=f"Bearer {token_a}",
        HTTP_ACCEPT="application/dicom+json",
    )
    assert response.status_code == 200 and response["Content-Type"] == DICOM_JSON
    studies = response.json()
    assert values(studies, STUDY_DESCRIPTION) == ["Study of P3", "Study of P2", "Study of P1"]
    # Modality is a series attribute: a study answers the first series' (ModalitiesInStudy lists them all).
    assert studies[2][MODALITY] == {"vr": "CS", "Value": ["CT"]}
    assert values(studies, MODALITY) == ["CT", "MR", "CT"]


def test_includefield_names_attributes_of_the_stored_objects(client, token_a, archive):
    (study,) = found(client, "studies", token_a, PatientID="P1", includefield=["PatientAge", "00101030"])
    assert study[PATIENT_AGE] == {"vr": "AS", "Value": ["056Y"]}
    assert study[PATIENT_WEIGHT] == {"vr": "DS", "Value": [71.5]}
    series = found(client, f"studies/{archive['P1']}/series", token_a, includefield="00180060,Manufacturer")
    assert series[0][KVP] == {"vr": "DS", "Value": [120.0]} and KVP not in series[1]  # a PT series has no kVp
    assert values(series, "00080070") == ["medarchive tests"] * 2
    # An attribute the index holds comes from it, at any level.
    (instance, *_) = found(client, f"studies/{archive['P1']}/instances", token_a, includefield="PatientID")
    assert value(instance, PATIENT_ID) == "P1"


def test_includefield_all_at_each_level(client, token_a, archive):
    (study,) = found(client, "studies", token_a, PatientID="P1", includefield="all")
    assert value(study, PATIENT_AGE) == "056Y" and value(study, "00101030") == 71.5
    assert MODALITY not in study and SOP_UID not in study and KVP not in study  # not study-level attributes
    series = found(client, f"studies/{archive['P1']}/series", token_a, includefield="all")
    assert value(series[0], "00180015") == "CHEST" and value(series[0], "00080080") == "Synthetic Site"
    assert KVP not in series[0] and SOP_UID not in series[0]
    path = f"studies/{archive['P1']}/series/{archive['P1-series']}/instances"
    instances = found(client, path, token_a, includefield="all")
    first = instances[0]
    assert first[KVP] == {"vr": "DS", "Value": [120.0]} and value(first, "00181210") == "B30f"
    assert first["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    assert value(first, PATIENT_NAME) == {"Alphabetic": "Doe^Jane"} and value(first, PATIENT_AGE) == "056Y"
    assert PIXEL_DATA not in first and value(first, CHARSET) == "ISO_IR 192"
    assert response_keys_are_sorted(first)


# --- Paging ---------------------------------------------------------------------------------------------------------------


def test_limit_and_offset_give_disjoint_pages_in_order(client, token_a, principal_a):
    for day in range(1, 8):
        ingest(principal_a, patient_id=f"PG{day}", study_date=date(2026, 5, day))
    everything = values(found(client, "studies", token_a), PATIENT_ID)
    assert everything == [f"PG{day}" for day in range(7, 0, -1)]
    pages = [values(found(client, "studies", token_a, limit=3, offset=offset), PATIENT_ID) for offset in (0, 3, 6, 9)]
    assert pages == [everything[0:3], everything[3:6], everything[6:7], []]


def test_results_past_the_maximum_are_cut_with_a_warning(client, token_a, principal_a, monkeypatch):
    monkeypatch.setitem(qido_rs.MAX_RESULTS, "study", 3)
    for day in range(1, 6):
        ingest(principal_a, patient_id=f"PG{day}", study_date=date(2026, 5, day))
    over = qido(client, "studies", token_a, limit=500)
    assert len(over.json()) == 3
    assert over["Warning"] == (
        '299 medarchive "The number of results exceeded the maximum supported by the server. Additional results can be requested."'
    )
    without_limit = qido(client, "studies", token_a)
    assert len(without_limit.json()) == 3 and without_limit["Warning"] == over["Warning"]
    # A page the client asked for is not a cut, and neither is a limit above the maximum when fewer results exist.
    assert not qido(client, "studies", token_a, limit=2).has_header("Warning")
    assert not qido(client, "studies", token_a, limit=500, offset=3).has_header("Warning")
    assert len(qido(client, "studies", token_a, limit=500, offset=3).json()) == 2


# --- Who sees what ------------------------------------------------------------------------------------------------------


def test_another_institution_finds_nothing_and_gets_404_for_the_studys_resources(client, token_b, archive):
    for path in ("studies", "series", "instances"):
        assert found(client, path, token_b) == []
    assert found(client, "studies", token_b, StudyInstanceUID=archive["P1"]) == []
    for path in (
        f"studies/{archive['P1']}/series",
        f"studies/{archive['P1']}/instances",
        f"studies/{archive['P1']}/series/{archive['P1-series']}/instances",
    ):
        response = qido(client, path, token_b)
        assert response.status_code == 404 and response.json() == {"error": "Not found.", "code": "not_found"}


def test_a_series_of_another_study_in_the_path_is_not_found(client, token_a, archive):
    response = qido(client, f"studies/{archive['P1']}/series/{archive['P2-series']}/instances", token_a)
    assert response.status_code == 404


def test_shared_study_appears_for_the_receiver_until_revoked(client, token_a, reader_token_b, principal_a, inst_b, archive):
    given = share(principal=principal_a, study=Study.objects.get(study_instance_uid=archive["P1"]), with_institution=inst_b)
    (received,) = found(client, "studies", reader_token_b)
    (own,) = found(client, "studies", token_a, PatientID="P1")
    # The receiver sees the study as the owner does: no attribute says it is shared, by whom or with whom else.
    assert received == own
    assert values(found(client, f"studies/{archive['P1']}/series", reader_token_b), SERIES_UID) == [
        archive["P1-series"],
        archive["P1-pt-series"],
    ]
    assert len(found(client, f"studies/{archive['P1']}/series/{archive['P1-series']}/instances", reader_token_b)) == 3
    revoke(principal=principal_a, share=given)
    assert found(client, "studies", reader_token_b) == []
    assert qido(client, f"studies/{archive['P1']}/series", reader_token_b).status_code == 404


def test_portal_session_searches_too_and_anonymous_callers_do_not(client, admin_a, archive):
    assert qido(client, "studies").status_code == 401
    login(client, admin_a.user)
    assert len(found(client, "studies", None)) == 3


# --- Errors and content negotiation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"StudyDate": "2026-01-05"}, "StudyDate"),
        ({"StudyDate": "20261301-20261231"}, "StudyDate"),
        ({"00080020": "yesterday"}, "00080020"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"NotAnAttribute": "x"}, "NotAnAttribute"),
        ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NotAKeyword"}, "includefield"),
        ({"PatientID": ["P1", "P2"]}, "PatientID"),
    ],
)
def test_malformed_parameters_are_400_naming_the_parameter(client, token_a, archive, params, parameter):
    response = qido(client, "studies", token_a, **params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["parameter"] == parameter and body["code"] == "invalid_query" and parameter in body["error"]
    assert not AuditEvent.objects.filter(action="dicomweb.search").exists()


def test_accept_of_json_is_served_and_of_xml_only_is_406(client, token_a, archive):
    as_json = qido(client, "studies", token_a, HTTP_ACCEPT="application/json")
    assert as_json.status_code == 200 and as_json["Content-Type"] == "application/json" and len(as_json.json()) == 3
    any_type = qido(client, "studies", token_a, HTTP_ACCEPT="*/*")
    assert any_type["Content-Type"] == DICOM_JSON
    assert qido(client, "studies", token_a, HTTP_ACCEPT="application/xml").status_code == 406
    assert qido(client, "studies", token_a, HTTP_ACCEPT='multipart/related; type="application/dicom+xml"').status_code == 406


def test_gzip_is_served_to_clients_that_accept_it(client, token_a, archive):
    plain = qido(client, "studies", token_a, includefield="all")
    zipped = qido(client, "studies", token_a, includefield="all", HTTP_ACCEPT_ENCODING="gzip")
    assert "Content-Encoding" not in plain
    assert zipped["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped["Vary"]
    assert len(zipped.content) < len(plain.content)
    assert json.loads(gzip.decompress(zipped.content)) == plain.json()


# --- Cost and audit -------------------------------------------------------------------------------------------------------


LEVEL_REQUESTS = [
    ("studies", {"includefield": "00081030,00080060", "limit": 101}),
    ("series", {"includefield": "all"}),
    ("instances", {"includefield": "all"}),
    ("studies", {"PatientName": "doe*"}),
]


def queries_of(client, token, path, params) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert qido(client, path, token, **params).status_code == 200
    return len(captured.captured_queries)


def test_queries_per_request_do_not_grow_with_the_number_of_studies(client, token_a, principal_a, django_assert_max_num_queries):
    def add_studies(count):
        for _ in range(count):
            study_uid = generate_uid()
            ingest(principal_a, "CT", patient_name="Doe^Many", study_uid=study_uid)
            ingest(principal_a, "PT", patient_name="Doe^Many", study_uid=study_uid, series_number=2)

    add_studies(3)
    qido(client, "studies", token_a)  # the token's first use records its last-used time, once
    few = {path + str(params): queries_of(client, token_a, path, params) for path, params in LEVEL_REQUESTS}
    add_studies(27)
    for path, params in LEVEL_REQUESTS:
        with django_assert_max_num_queries(few[path + str(params)]):
            results = found(client, path, token_a, **params)
        assert len(results) >= 30
    # Authentication, the search, the first instances' metadata where asked for, and the audit event.
    assert max(few.values()) <= 4


def test_each_search_writes_one_audit_event_with_the_query_and_the_result_count(client, token_a, inst_a, archive):
    found(client, "studies", token_a, PatientName="doe*", includefield="00081030")
    found(client, f"studies/{archive['P1']}/series", token_a)
    studies, series = AuditEvent.objects.filter(action="dicomweb.search").order_by("pk")
    assert studies.institution == inst_a and studies.principal_kind == "token"
    assert studies.object_type == "study" and studies.detail == {"query": {"PatientName": "doe*", "includefield": "00081030"}, "results": 2}
    assert series.object_type == "series" and series.object_id == archive["P1"] and series.detail["results"] == 2


# --- CORS for a viewer on another origin -------------------------------------------------------------------------------


VIEWER = "https://viewer.example.org"


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [VIEWER]


def test_preflight_from_the_allowed_origin_may_send_the_authorization_header(client, cors):
    response = client.options(
        "/dicomweb/studies",
        HTTP_ORIGIN=VIEWER,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == VIEWER
    assert "authorization" in response["Access-Control-Allow-Headers"]
    assert "GET" in response["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response


def test_preflight_from_another_origin_gets_no_cors_headers(client, cors):
    response = client.options("/dicomweb/studies", HTTP_ORIGIN="https://evil.example.com", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert not [header for header in response.headers if header.lower().startswith("access-control-")]


def test_search_from_the_allowed_origin_exposes_the_warning_header(client, cors, token_a, archive):
    response = qido(client, "studies", token_a, HTTP_ORIGIN=VIEWER)
    assert response.status_code == 200 and response["Access-Control-Allow-Origin"] == VIEWER
    exposed = {header.strip().lower() for header in response["Access-Control-Expose-Headers"].split(",")}
    assert {"warning", "content-type", "content-length"} <= exposed
    # A refused token's answer carries the headers too, so the viewer can read why.
    refused = qido(client, "studies", "mda_00000000_not-a-token", HTTP_ORIGIN=VIEWER)
    assert refused.status_code == 401 and refused["Access-Control-Allow-Origin"] == VIEWER


def test_portal_pages_get_no_cors_headers_even_for_the_allowed_origin(client, cors):
    response = client.get("/accounts/login/", HTTP_ORIGIN=VIEWER)
    assert "Access-Control-Allow-Origin" not in response


def test_no_origin_is_allowed_by_default(client, token_a, archive):
    response = qido(client, "studies", token_a, HTTP_ORIGIN=VIEWER)
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response


# --- A real third-party client ----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dicomweb_client_searches_studies_series_and_instances(live_server, admin_a, principal_a):
    from dicomweb_client.api import DICOMwebClient

    archive = {}
    for pid, name, modality, count in [("DW1", "Doe^Jane", "CT", 3), ("DW2", "Doe^John", "MR", 2), ("DW3", "Roe^Max", "CT", 1)]:
        study_uid, series_uid = generate_uid(), generate_uid()
        sops = [
            ingest(principal_a, modality, patient_id=pid, patient_name=name, study_uid=study_uid, series_uid=series_uid, instance_number=n)
            for n in range(1, count + 1)
        ]
        archive[pid] = (study_uid, series_uid, [instance.sop_instance_uid for instance in sops])
    raw = services.issue_token(actor=principal_a, membership=admin_a, name="dicomweb-client")[1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    client = DICOMwebClient(url=live_server.url + "/dicomweb", session=session)

    studies = client.search_for_studies(search_filters={"PatientName": "Doe*"}, fuzzymatching=False, fields=["StudyDescription"])
    assert sorted(values(studies, STUDY_UID)) == sorted([archive["DW1"][0], archive["DW2"][0]])
    assert values(studies, STUDY_DESCRIPTION) == ["Synthetic study", "Synthetic study"]
    by_uid = {value(study, STUDY_UID): study for study in studies}
    assert value(by_uid[archive["DW1"][0]], STUDY_INSTANCES) == 3 and value(by_uid[archive["DW2"][0]], STUDY_INSTANCES) == 2
    fuzzy = client.search_for_studies(search_filters={"PatientName": "ohn"}, fuzzymatching=True)
    assert values(fuzzy, STUDY_UID) == [archive["DW2"][0]]
    assert client.search_for_studies(search_filters={"PatientName": "ohn"}, fuzzymatching=False) == []
    paged = client.search_for_studies(limit=1, get_remaining=True)
    assert sorted(values(paged, PATIENT_ID)) == ["DW1", "DW2", "DW3"]

    ct_series = client.search_for_series(search_filters={"Modality": "CT"})
    assert sorted(values(ct_series, SERIES_UID)) == sorted([archive["DW1"][1], archive["DW3"][1]])
    (series,) = client.search_for_series(study_instance_uid=archive["DW1"][0])
    assert value(series, SERIES_UID) == archive["DW1"][1] and value(series, SERIES_INSTANCES) == 3

    instances = client.search_for_instances(study_instance_uid=archive["DW1"][0], series_instance_uid=archive["DW1"][1])
    assert values(instances, SOP_UID) == archive["DW1"][2]
    everywhere = client.search_for_instances(search_filters={"00100020": "DW2"}, fields=["KVP", "RepetitionTime"])
    assert values(everywhere, SOP_UID) == archive["DW2"][2]
    assert value(everywhere[0], "00180080") == 2000.0 and KVP not in everywhere[0]
    assert AuditEvent.objects.filter(action="dicomweb.search").count() >= 8
