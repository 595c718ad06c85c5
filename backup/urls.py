"""Portal pages of the backup app, mounted at backup/."""

from django.urls import path

from .views import contracts, runs

urlpatterns = [
    path("contracts/", contracts.contract_list, name="backup-contracts"),
    path("contracts/new/", contracts.contract_new, name="backup-contract-new"),
    path("contracts/<int:pk>/", contracts.contract_detail, name="backup-contract"),
    path("contracts/<int:pk>/counter/", contracts.contract_counter, name="backup-contract-counter"),
    path("contracts/<int:pk>/accept/", contracts.contract_accept, name="backup-contract-accept"),
    path("contracts/<int:pk>/reject/", contracts.contract_reject, name="backup-contract-reject"),
    path("contracts/<int:pk>/terminate/", contracts.contract_terminate, name="backup-contract-terminate"),
    # Runs (backup engine): start, follow, download.
    path("contracts/<int:pk>/runs/backup/", runs.start_backup, name="backup-run-start"),
    path("contracts/<int:pk>/runs/verify/", runs.start_verify, name="backup-verify-start"),
    path("contracts/<int:pk>/runs/restore/", runs.start_restore, name="backup-restore-start"),
    path("runs/<int:run_id>/", runs.run_detail, name="backup-run"),
    path("runs/<int:run_id>/progress/", runs.run_progress, name="backup-run-progress"),
    path("runs/<int:run_id>/download/", runs.run_download, name="backup-run-download"),
]
