"""Quire: bulk DOCX to PDF conversion service (API and shared core)."""
