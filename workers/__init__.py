"""Quire's Celery workers: ingest, conversion with LibreOffice, archive, sweeper."""
