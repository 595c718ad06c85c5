"""manage.py import_dicom: a folder tree or a zip into one institution's archive, with a summary and an exit status."""

import io
import os
import re
import shutil
import zipfile

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from images.management.commands.import_dicom import Command
from images.models import Instance
from subscribers.models import AuditEvent
from tests.dicom_files import BUNDLED, bundled_path, synth_bytes
from tests.factories import member


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(path, *args, stderr=None):
    """(exit status, stdout, stderr) of one run of the command."""
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    try:
        call_command("import_dicom", str(path), *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, out.getvalue(), err.getvalue()


def summary_counts(out: str) -> dict:
    found = (re.fullmatch(r"  (stored|already stored|replaced|refused) +([\d,]+)", line) for line in out.splitlines())
    return {m[1]: int(m[2].replace(",", "")) for m in found if m}


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def clean_tree(tmp_path):
    """A PACS export: real bundled files and a synthesized series in sub-folders, nothing else."""
    root = tmp_path / "export"
    shutil.copy(bundled_path(BUNDLED["CT"]), write(root / "CT_small.dcm", b""))
    shutil.copy(bundled_path(BUNDLED["MR"]), write(root / "mr" / "IM0001", b""))
    for i in range(2):
        write(root / "series" / "ct" / f"IM{i:04d}", synth_bytes("CT", instance_number=i + 1, study_uid="1.2.826.0.1.3680043.8.498.77"))
    return root


@pytest.fixture
def mixed_tree(clean_tree, tmp_path):
    """The export as found on a patient CD: with a DICOMDIR, a README, a nested zip and links leading out of it."""
    shutil.copy(bundled_path("DICOMDIR"), clean_tree / "DICOMDIR")
    write(clean_tree / "README.txt", b"Burned by the viewer of Example Hospital\n")
    write(clean_tree / "more.zip", b"PK\x05\x06" + bytes(18))
    outside = write(tmp_path / "outside" / "secret.dcm", synth_bytes("MR", sop_uid="1.2.826.0.1.3680043.8.498.99"))
    os.symlink(outside, clean_tree / "link-to-secret.dcm")
    os.symlink(outside.parent, clean_tree / "link-to-outside")
    os.symlink(clean_tree / "CT_small.dcm", clean_tree / "series" / "same-ct.dcm")  # inside: read, already stored
    return clean_tree


def test_folder_tree_of_mixed_files_is_imported_and_refusals_are_listed(inst_a, mixed_tree):
    status, out, err = run(mixed_tree, "--institution", "alpha")
    assert status == 1
    assert Instance.objects.filter(institution=inst_a, source="import").count() == 4
    assert not Instance.objects.filter(sop_instance_uid="1.2.826.0.1.3680043.8.498.99").exists()  # never followed out
    assert "into Alpha Hospital (alpha): 10 files" in out
    assert summary_counts(out) == {"stored": 4, "already stored": 1, "refused": 5}
    assert "DICOMDIR: This is not a DICOM file but a DICOMDIR" in out
    assert "README.txt: This is not a DICOM file" in out
    assert "more.zip: This is not a DICOM file but a zip" in out
    assert "link-to-secret.dcm: This is a symbolic link leading outside the folder" in out
    assert "link-to-outside: This is a symbolic link leading outside the folder" in out
    assert err == ""  # no progress bar when standard error is not a terminal
    batch = AuditEvent.objects.get(action="instances.store")
    assert batch.institution == inst_a and batch.principal_kind == "operator" and batch.actor == "operator (command line)"
    assert batch.detail["stored"] == 4 and batch.detail["refused"] == 5 and batch.detail["source"] == "import"


def test_second_run_finds_everything_already_stored_and_exits_0(inst_a, clean_tree):
    assert run(clean_tree, "--institution", "alpha")[0] == 0
    status, out, _ = run(clean_tree, "--institution", "alpha")
    assert status == 0
    assert summary_counts(out) == {"stored": 0, "already stored": 4, "refused": 0}
    assert Instance.objects.count() == 4


def test_zip_is_imported(inst_a, tmp_path):
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(3):
            archive.writestr(f"study/IM{i}", synth_bytes("CT", instance_number=i + 1))
        archive.writestr("study/", b"")
    status, out, _ = run(path, "--institution", "alpha")
    assert status == 0 and "3 files" in out
    assert Instance.objects.filter(institution=inst_a, source="import").count() == 3


def test_zip_refused_as_a_whole_exits_1_with_the_reason(inst_a, tmp_path, settings):
    settings.UPLOAD_MAX_UNCOMPRESSED_BYTES = 1000
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM0", synth_bytes("CT"))
    status, out, _ = run(path, "--institution", "alpha")
    assert status == 1 and "the archive unpacks at most 1,000 bytes per zip" in out
    assert Instance.objects.count() == 0


def test_progress_bar_is_drawn_on_a_terminal(inst_a, clean_tree):
    _, _, err = run(clean_tree, "--institution", "alpha", stderr=Terminal())
    assert "\r[" in err and "4/4 files" in err and "MB/s" in err and err.endswith("\n")


def test_import_as_a_member_with_the_register_role(inst_a, clean_tree):
    member(inst_a, "tech_a", ["register"])
    assert run(clean_tree, "--institution", "alpha", "--as-user", "tech_a")[0] == 0
    assert AuditEvent.objects.get(action="instances.store").actor == "tech_a"


def test_member_without_the_register_role_cannot_import(inst_a, clinician_a, clean_tree):
    with pytest.raises(CommandError, match="Register images"):
        run(clean_tree, "--institution", "alpha", "--as-user", "clinician_a")
    assert Instance.objects.count() == 0


def test_unknown_institution_user_or_path_is_a_command_error(inst_a, clean_tree, tmp_path):
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        run(clean_tree, "--institution", "nowhere")
    with pytest.raises(CommandError, match="'ghost' is not an active member of 'alpha'"):
        run(clean_tree, "--institution", "alpha", "--as-user", "ghost")
    with pytest.raises(CommandError, match="no such file or folder") as error:
        run(tmp_path / "missing", "--institution", "alpha")
    assert error.value.returncode == 2


def test_suspended_institution_cannot_import(inst_a, clean_tree):
    inst_a.status = "suspended"
    inst_a.save()
    with pytest.raises(CommandError, match="not active"):
        run(clean_tree, "--institution", "alpha")


def test_help_documents_the_exit_status():
    text = Command().create_parser("manage.py", "import_dicom").format_help()
    assert "Exit status:" in text and "some files (or the whole zip) were refused" in text
