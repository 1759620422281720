"""What the fronts (daemon/http/) use of the rest of the daemon besides the read model,
named in one place: the values the read model hands out (an opened result file, a job's
summary in the outbox index, a kind's default model) and the checks a front makes before
it asks (a job id's form, a spool fault, a hub snapshot's repo). A front imports only this
package, its own, config and the contract (tests/test_layers.py)."""

from daemon.kind_models import KindModel, kind_model, registry_models
from daemon.outbox.index import JobSummary
from daemon.registry import hub_repo
from daemon.spool.fscheck import spool_fault
from daemon.spool.job_files import OpenedFile, read_job_file
from daemon.spool.layout import is_valid_job_id

__all__ = ["JobSummary", "KindModel", "OpenedFile", "hub_repo", "is_valid_job_id", "kind_model", "read_job_file",
           "registry_models", "spool_fault"]
