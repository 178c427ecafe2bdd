"""LibreOffice, supervised: everything the worker needs to turn a DOCX into a PDF.

One module per concern:

- ``errors``: the exception tree, documented where it is defined;
- ``options``: ``PdfOptions``, what a job asks of its PDFs;
- ``base``: the ``Converter`` protocol that the pipeline is given;
- ``process``: the sandbox and memory settings, soffice's flags, killing a process group, the
  pipes a killed instance leaves;
- ``profile``: the security settings every profile starts from;
- ``workdir``: the one folder with a document in it that LibreOffice may read;
- ``sandbox``: Landlock, seccomp and a memory limit, applied by the file itself run as a script
  (standard library only);
- ``watchdog``: the deadline of a UNO call that cannot be interrupted;
- ``uno``: ``UnoConverter``, the warm instance driven through UNO;
- ``cli``: ``CliConverter``, one ``soffice --convert-to`` per file, where uno is missing;
- ``fake``: ``FakeConverter``, for unit tests of the pipeline.

``UnoConverter`` is not exported here: ``workers.libreoffice.uno`` is the only module that
imports ``uno``, so importing this package works where python3-uno is missing (the API's image,
the command-line fallback, tests that never start LibreOffice). Import it from there.
"""

from workers.libreoffice.base import Converter
from workers.libreoffice.cli import CliConverter
from workers.libreoffice.errors import (
    ConversionError,
    ConversionTimeout,
    ConverterCrashed,
    ConverterMisconfigured,
    ConverterUnavailable,
)
from workers.libreoffice.fake import FakeConverter, minimal_pdf
from workers.libreoffice.options import PLAIN_PDF, PdfOptions
from workers.libreoffice.process import (
    SandboxSetting,
    live_processes_in_group,
    single_instance_pipe,
)

__all__ = [
    "PLAIN_PDF",
    "CliConverter",
    "ConversionError",
    "ConversionTimeout",
    "Converter",
    "ConverterCrashed",
    "ConverterMisconfigured",
    "ConverterUnavailable",
    "FakeConverter",
    "PdfOptions",
    "SandboxSetting",
    "live_processes_in_group",
    "minimal_pdf",
    "single_instance_pipe",
]
