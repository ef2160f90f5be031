"""``phasegate audit``: catch broken function folders before they ship.

It reports what would break a deploy (a name used without its import, an import
no requirement provides, a local package left out of the upload, a symlink, a
hard-coded absolute path) and, with ``strict``, imports that only arrive as a
dependency of a declared distribution. Test files are judged against the test
requirements; ``.gcloudignore`` decides what ships.
"""

from phasegate.audit.bundled import BundledPackage
from phasegate.audit.core import AuditSettings, audit, find_folders, load_settings
from phasegate.audit.folder import FolderAudit
from phasegate.audit.names import (
    ProvidesIndex,
    import_names,
    modules_from_files,
    normalise,
    read_requirements,
)
from phasegate.audit.report import KINDS, AuditReport, Finding

__all__ = [
    "KINDS",
    "AuditReport",
    "AuditSettings",
    "BundledPackage",
    "Finding",
    "FolderAudit",
    "ProvidesIndex",
    "audit",
    "find_folders",
    "import_names",
    "load_settings",
    "modules_from_files",
    "normalise",
    "read_requirements",
]
