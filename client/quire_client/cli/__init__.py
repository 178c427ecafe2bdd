"""``quire``, the command line over ``quire_client``: upload DOCX files, follow the job,
download the PDFs, and retry, cancel, delete or list jobs.

``commands`` parses the command line and maps the client's errors to exit codes, ``render``
shows progress and results (with rich), ``errors`` holds the exit codes.
"""

from quire_client.cli.commands import main

__all__ = ["main"]
