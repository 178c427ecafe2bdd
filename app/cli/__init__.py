"""``quire``, the command-line client: upload DOCX files, follow the job, download the PDFs.

Talks to the API over HTTP only (it imports nothing of the server), so it runs anywhere the
package is installed. ``archive`` zips a folder, ``client`` speaks HTTP, ``render`` shows
progress and results, ``commands`` parses the command line.
"""

from app.cli.commands import main

__all__ = ["main"]
