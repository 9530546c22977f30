"""FASTA and A3M input for OpenFold, validated (pure Python, no numpy/torch).

Policy (errors are UserError naming the record, position and fix):
- lowercase residues in FASTA are accepted and upper-cased; whitespace and line breaks inside
  a sequence are ignored; one trailing `*` (stop) is dropped;
- the 20 standard residues and `X` (unknown) are accepted; `U` (selenocysteine) is folded as
  `C` and `O` (pyrrolysine) as `K`, the nearest standard residues; ambiguity codes `B`, `Z`,
  `J` become `X`. Every substitution is reported in `Query.notes`;
- gaps (`-`, `.`) in a FASTA query, digits and other symbols are errors;
- a FASTA file must hold exactly one record (AlphaFold2 monomer folds one chain); a file with
  no `>` line is read as one bare sequence;
- A3M: the first row is the query; uppercase letters and `-` are match columns, lowercase
  letters are insertions (counted in the deletion matrix), `.` is ignored; every row must
  have as many match columns as the query; duplicate rows are dropped (first kept).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from xopt.errors import UserError

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
SUBSTITUTE = {"U": "C", "O": "K", "B": "X", "Z": "X", "J": "X"}
A3M_ALLOWED = set(STANDARD + "X" + "".join(SUBSTITUTE) + "-")
MAX_RESIDUES = 10_000  # beyond any AlphaFold2 run; guards against feeding a genome by mistake


@dataclasses.dataclass
class Query:
    name: str
    sequence: str  # standard residues + X, upper case
    description: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Alignment:
    rows: list[str]  # aligned rows over the query's columns (residues, X, '-')
    deletions: list[list[int]]  # per row, insertions before each column
    names: list[str]


def _read_text(path: str | Path, what: str) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"{what} {path} does not exist", "pass an existing file") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{what} {path} is a directory", "pass a file") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start})", "pass a plain-text file") from exc


def _records(text: str, source: str) -> list[tuple[str, list[str]]]:
    """[(header, sequence lines)]; a text without any header is one record named `source`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not any(line.startswith(">") for line in lines):
        body = [ln for ln in lines if ln.strip() and not ln.startswith(";")]
        return [(source, body)] if body else []
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(lines, 1):
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif line.startswith(";") or not line.strip():
            continue
        elif not records:
            raise UserError(f"{source}: text before the first '>' header (line {lineno})",
                            "start the file with a '>name' line or remove the stray text")
        else:
            records[-1][1].append(line)
    return records


def clean_sequence(raw: str, name: str = "query") -> Query:
    """Validate and normalise one query sequence (see the module policy)."""
    seq = "".join(raw.split()).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    notes: list[str] = []
    out = []
    for i, ch in enumerate(seq, 1):
        if ch in STANDARD or ch == "X":
            out.append(ch)
        elif ch in SUBSTITUTE:
            out.append(SUBSTITUTE[ch])
        elif ch in "-.":
            raise UserError(f"record '{name}' has a gap '{ch}' at position {i}",
                            "give the query ungapped; for an alignment pass an .a3m file instead")
        else:
            raise UserError(f"record '{name}' has '{ch}' at position {i}, not an amino-acid letter",
                            f"use the one-letter codes {STANDARD} (X for unknown)")
    for src, dst in SUBSTITUTE.items():
        n = seq.count(src)
        if n:
            notes.append(f"{n} x {src} read as {dst}")
    if not out:
        raise UserError(f"record '{name}' has an empty sequence", "put the residues on the lines after the header")
    if len(out) > MAX_RESIDUES:
        raise UserError(f"record '{name}' has {len(out)} residues (more than {MAX_RESIDUES})",
                        "fold one protein chain at a time")
    if all(c == "X" for c in out):
        raise UserError(f"record '{name}' has only unknown residues (X)", "pass a real protein sequence")
    return Query(name=name.split()[0] if name.split() else "query", sequence="".join(out),
                 description=name, notes=notes)


def parse_fasta_text(text: str, source: str = "<fasta>") -> Query:
    records = _records(text, source)
    if not records:
        raise UserError(f"{source} holds no sequence", "pass a FASTA file with one '>name' record")
    if len(records) > 1:
        names = ", ".join(r[0] or "(unnamed)" for r in records[:5])
        raise UserError(f"{source} holds {len(records)} records ({names}{', ...' if len(records) > 5 else ''})",
                        "AlphaFold2 folds one chain: keep one record per file")
    header, lines = records[0]
    return clean_sequence("".join(lines), header or Path(source).stem or "query")


def read_fasta(path: str | Path) -> Query:
    return parse_fasta_text(_read_text(path, "FASTA file"), str(path))


def _a3m_row(raw: str, name: str) -> tuple[str, list[int]]:
    row, dels, pending = [], [], 0
    for ch in "".join(raw.split()):
        if ch.islower():
            pending += 1
        elif ch == ".":
            continue
        else:
            up = ch.upper()
            if up not in A3M_ALLOWED:
                raise UserError(f"A3M row '{name}' has '{ch}', not a residue or gap",
                                "fix the alignment (uppercase/'-' match columns, lowercase insertions)")
            row.append(SUBSTITUTE.get(up, up))
            dels.append(pending)
            pending = 0
    return "".join(row), dels


def parse_a3m_text(text: str, query: str | None = None, source: str = "<a3m>") -> Alignment:
    """Alignment over the query's columns; `query` (cleaned) must equal the first row."""
    records = _records(text, source)
    if not records:
        raise UserError(f"{source} holds no alignment rows", "pass an A3M file whose first row is the query")
    rows, dels, names, seen = [], [], [], set()
    for header, lines in records:
        row, d = _a3m_row("".join(lines), header or "(unnamed)")
        if not row:
            raise UserError(f"A3M row '{header}' in {source} is empty", "remove the empty record")
        if rows and len(row) != len(rows[0]):
            raise UserError(f"A3M row '{header}' has {len(row)} match columns, the query has {len(rows[0])}",
                            "re-export the alignment in A3M format (insertions in lowercase)")
        if row in seen:
            continue
        seen.add(row)
        rows.append(row)
        dels.append(d)
        names.append(header)
    first = rows[0]
    if "-" in first:
        raise UserError(f"the first A3M row in {source} has gaps", "the first row must be the ungapped query")
    if query is not None and first != query:
        where = next((i for i, (a, b) in enumerate(zip(first, query), 1) if a != b), min(len(first), len(query)) + 1)
        raise UserError(f"the first A3M row in {source} differs from the FASTA query (from position {where}; "
                        f"{len(first)} vs {len(query)} residues)", "align against the same query sequence")
    return Alignment(rows=rows, deletions=dels, names=names)


def read_a3m(path: str | Path, query: str | None = None) -> Alignment:
    return parse_a3m_text(_read_text(path, "A3M file"), query, str(path))
