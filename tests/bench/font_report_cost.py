"""What the font report (workers/fonts.py, issue #18) costs per file, in-process.

    python -m tests.bench.font_report_cost                 # 200 corpus documents
    python -m tests.bench.font_report_cost --documents 50 --rounds 3
    python -m tests.bench.font_report_cost --bench         # make bench's two-page documents

Each document of the shared corpus (../shared/corpus, sorted by path, the first
``--documents`` that LibreOffice converts) is converted once, off the clock, by one warm
LibreOffice; then the report of every (DOCX, PDF) pair is made ``--rounds`` times, timed with
this process's CPU time (``time.process_time``) and that of its children (``os.times``: the
``fc-match`` runs). With ``--bench``, the documents are ``make bench``'s two-page ones
(tests/bench/documents.py) instead. The first round starts with no fontconfig answers kept
(as a freshly started worker); later rounds find them kept (the steady state of a worker).
Per round: CPU ms per file, split into reading the DOCX, reading the PDF, and judging
(fontconfig included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from app.config import get_settings
from tests.bench.documents import bench_docx
from tests.conftest import CORPUS
from workers import fonts
from workers.libreoffice.uno import UnoConverter


def cpu() -> float:
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bench", action="store_true", help="make bench's documents")
    args = parser.parse_args()
    settings = get_settings()
    work = Path(tempfile.mkdtemp(prefix="font-cost-"))
    converter = UnoConverter(
        soffice=settings.soffice_path,
        profile_root=work / "profiles",
        start_timeout=60,
        restart_after=10_000,
    )
    pairs: list[tuple[Path, Path]] = []
    if args.bench:
        sources = []
        for index in range(args.documents):
            sources.append(work / f"bench-{index}.docx")
            sources[-1].write_bytes(bench_docx(index, 2))
    else:
        sources = sorted(CORPUS.rglob("*.docx"))
    try:
        for index, source in enumerate(sources):
            if len(pairs) >= args.documents:
                break
            target = work / f"{index}.pdf"
            try:
                converter.convert(source, target, 60)
            except Exception as error:  # noqa: BLE001 - a document LibreOffice refuses is left out
                print(f"left out: {source.name}: {type(error).__name__}")
                continue
            if target.is_file() and target.stat().st_size:
                pairs.append((source, target))
    finally:
        converter.close()

    rounds = []
    for number in range(args.rounds):
        if number == 0:
            fonts._fontconfigs.clear()  # a freshly started worker: no answers kept
        read_docx = read_pdf = judging = 0.0
        families = 0
        for source, target in pairs:
            start = cpu()
            requested = fonts.requested_fonts(source, settings.max_part_expanded_bytes)
            middle = cpu()
            present = fonts.pdf_fonts(target) if requested.slots else set()
            after_pdf = cpu()
            if requested.slots:
                fonts.judge(requested, present, fonts.fontconfig_for(settings))
            end = cpu()
            read_docx += middle - start
            read_pdf += after_pdf - middle
            judging += end - after_pdf
            families += len(requested.slots)
        count = len(pairs)
        rounds.append(
            {
                "round": number + 1,
                "fontconfig": "cold" if number == 0 else "kept",
                "cpu_ms_per_file": round(1000 * (read_docx + read_pdf + judging) / count, 2),
                "docx_ms": round(1000 * read_docx / count, 2),
                "pdf_ms": round(1000 * read_pdf / count, 2),
                "judge_ms": round(1000 * judging / count, 2),
                "families_per_file": round(families / count, 1),
            }
        )
    steady = [one["cpu_ms_per_file"] for one in rounds[1:]] or [rounds[0]["cpu_ms_per_file"]]
    print(json.dumps({"documents": len(pairs), "rounds": rounds}, indent=1))
    print(f"font report: {statistics.median(steady):.2f} ms CPU per file (fontconfig answers kept)")


if __name__ == "__main__":
    main()
