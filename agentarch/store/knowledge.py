"""The knowledge base: notes the researcher reads from (a paper's abstract and method, a lab's own lessons), split into
entries and indexed with SQLite FTS5 inside the archive, so that each proposal's prompt can show the few entries most
relevant to its parent, the latest analysis and the notebook (issue 28).

In the archive because it then needs no service of its own, survives a resume and travels with the file. Its own module
because it is one job that the loop, `agentarch prompt` and `agentarch knowledge` ask alike: read a folder into entries
(Markdown by heading, text by paragraph, each capped), keep the index in step with the files (a file whose size or
mtime moved is read again, and reindexed when its sha256 changed; a removed file's entries are dropped), and answer a
search. A search is safe with any text, a model's analysis or a person's query alike: it is reduced to word terms,
each quoted as an FTS5 string, so no FTS5 syntax (NEAR, *, column filters, parentheses, quotes) reaches the parser.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat as stat_kind
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agentarch.prompt_templates
from agentarch.errors import UsageError
from agentarch.store.handle import Handle, now

STARTER = Path(agentarch.prompt_templates.__file__).resolve().parent / "knowledge"
"""The starter base shipped with agentarch: short notes on well-known ideas, written for this project."""
STARTER_NAME = "starter"
"""What names the starter base where a path is asked for (`--knowledge starter`), unless a file of that name exists."""

MARKDOWN = {".md", ".markdown"}
TEXT = {".txt", ".text", ".rst"}
PDF = ".pdf"
MAX_ENTRY_CHARS = 1600
"""The most characters one entry holds: a longer section is split at paragraphs (a longer paragraph is cut), so one
entry never crowds the examples out of a prompt."""
MAX_FILE_BYTES = 2_000_000
"""A larger file is skipped, with the reason: notes, not books."""
MAX_FILES = 2000
"""A folder with more note files than this is refused: it is probably not the folder meant."""
MAX_TERMS = 64
"""The most word terms a search keeps of its text (the first ones, by where they come from: see `proposal_query`)."""


class KnowledgeError(UsageError):
    """A knowledge base cannot be read as asked (no such folder, a PDF, too many files); the message says what to do."""


@dataclass
class Entry:
    """One entry found: the file it comes from (`path`), the name it is shown by (`source`: the added folder's name and
    the file's path inside it, never the machine's own path), its title and text, and its sha256."""

    id: int
    path: str
    source: str
    title: str
    text: str
    sha256: str
    rank: float | None = None

    def shown(self) -> dict[str, Any]:
        """What a prompt shows of the entry (and a proposal's checkpoint keeps)."""
        return {"source": self.source, "title": self.title, "text": self.text, "sha256": self.sha256}


@dataclass
class Indexed:
    """What a refresh did under one root: files read again (`reindexed`), unchanged, removed; files skipped, why."""

    root: Path
    files: int = 0
    entries: int = 0
    reindexed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# -- reading notes into entries -----------------------------------------------------------------------------------


def resolve(path: Path | str) -> Path:
    """The folder or file `path` names, absolute (`starter`: the shipped starter base, unless such a file exists here);
    KnowledgeError when there is none."""
    given = Path(path).expanduser()
    if str(path) == STARTER_NAME and not given.exists():
        return STARTER
    if not given.exists():
        raise KnowledgeError(
            f"no knowledge folder or file {str(path)!r}; give a folder of Markdown or text notes (or "
            f"{STARTER_NAME!r} for the starter base shipped with agentarch)"
        )
    return given.resolve()


def read_entries(path: Path, data: bytes | None = None) -> list[tuple[str, str]]:
    """The (title, text) entries of one note file: Markdown split by heading, text by paragraph, each at most
    MAX_ENTRY_CHARS. A PDF is refused: no PDF text extractor is installed with agentarch."""
    if path.suffix.lower() == PDF:
        raise KnowledgeError(
            f"{path.name}: PDF notes are not read (agentarch installs no PDF text extractor); convert it to text "
            "first, e.g. `pdftotext paper.pdf paper.txt` (poppler-utils) or with pypdf, and add the .txt"
        )
    raw = data if data is not None else path.read_bytes()
    text = raw.decode("utf-8", errors="replace").replace("\x00", "").replace("\r\n", "\n")
    if path.suffix.lower() in MARKDOWN:
        return _capped(split_markdown(text, path.stem))
    return _capped(split_text(text, path.stem))


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def split_markdown(text: str, stem: str) -> list[tuple[str, str]]:
    """Sections by heading (outside code fences), each titled by its heading path ("Residual connections / When"); the
    text before the first heading is titled by the file's name. Sections with no text of their own are left out."""
    sections: list[tuple[str, list[str]]] = [(stem, [])]
    path: list[tuple[int, str]] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, heading.group(2).strip())]
            sections.append((" / ".join(title for _, title in path), []))
        else:
            sections[-1][1].append(line)
    return [(title, "\n".join(body).strip()) for title, body in sections if "\n".join(body).strip()]


def split_text(text: str, stem: str) -> list[tuple[str, str]]:
    """Paragraphs (blank-line separated), a short one joined to the next, each titled by the file's name and its
    first words."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    joined: list[str] = []
    for paragraph in paragraphs:
        if joined and len(joined[-1]) < 300:
            joined[-1] = f"{joined[-1]}\n\n{paragraph}"
        else:
            joined.append(paragraph)
    return [(f"{stem}: {_first_words(p)}", p) for p in joined]


def _first_words(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def _capped(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each entry at most MAX_ENTRY_CHARS: a longer one split at paragraphs into parts ("Title (2)")."""
    out: list[tuple[str, str]] = []
    for title, text in entries:
        title = " ".join(title.split())[:200]
        parts: list[str] = []
        for paragraph in re.split(r"\n\s*\n", text):
            while len(paragraph) > MAX_ENTRY_CHARS:  # one paragraph longer than an entry: cut at a space
                cut = paragraph.rfind(" ", 0, MAX_ENTRY_CHARS) if " " in paragraph[:MAX_ENTRY_CHARS] else -1
                cut = cut if cut > 0 else MAX_ENTRY_CHARS
                parts.append(paragraph[:cut].strip())
                paragraph = paragraph[cut:].strip()
            if parts and len(parts[-1]) + len(paragraph) + 2 <= MAX_ENTRY_CHARS:
                parts[-1] = f"{parts[-1]}\n\n{paragraph}".strip()
            elif paragraph.strip():
                parts.append(paragraph.strip())
        for number, part in enumerate(parts, 1):
            out.append((title if len(parts) == 1 else f"{title} ({number})", part))
    return out


def files_of(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The note files under `root` (or `root` itself), sorted, hidden ones left out; and the files skipped, with why
    (a PDF, a file over MAX_FILE_BYTES, a link to a file outside `root`, whose text would otherwise reach a prompt).
    KnowledgeError when there are more than MAX_FILES."""
    if root.is_file():
        if root.suffix.lower() == PDF:
            read_entries(root, b"")  # a PDF given by name is refused, with what to do
        if root.suffix.lower() not in MARKDOWN | TEXT:
            raise KnowledgeError(f"{root.name} is no note: give Markdown (.md) or text (.txt) files")
        candidates = [root]
    else:
        candidates = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    files, skipped = [], []
    for path in candidates:
        suffix = path.suffix.lower()
        if path != root and not _inside(path, root):  # a link out of the folder: /etc/passwd, the archive itself
            skipped.append((str(path), "a link to a file outside the folder: copy the note into the folder instead"))
        elif suffix == PDF:
            skipped.append((str(path), "PDF: no PDF text extractor is installed; convert it to .txt"))
        elif suffix in MARKDOWN | TEXT:
            try:
                size = path.stat().st_size
            except OSError as err:  # removed since the folder was listed
                skipped.append((str(path), f"cannot be read ({err.strerror or err})"))
                continue
            if size > MAX_FILE_BYTES:
                skipped.append((str(path), f"over {MAX_FILE_BYTES:,} bytes"))
            else:
                files.append(path)
    if len(files) > MAX_FILES:
        raise KnowledgeError(f"{root} holds {len(files):,} note files, more than {MAX_FILES:,}: give a smaller folder")
    return files, skipped


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, its links followed, is a file under `root` (itself resolved by `resolve`)."""
    try:
        return path.resolve(strict=True).is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a dangling or looping link
        return False


def read_note(path: Path, follow: bool = True) -> bytes:
    """The bytes of one note file, at most MAX_FILE_BYTES: OSError for anything but a regular file (a FIFO or a
    device swapped in after the folder was listed would block or never end) and KnowledgeError for a file that grew
    past the cap since it was listed. Opened non-blocking, so a FIFO is refused rather than waited on."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as stream:
        if not stat_kind.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise KnowledgeError(f"{path.name} is over {MAX_FILE_BYTES:,} bytes")
    return data


# -- keeping the index in step with the files ---------------------------------------------------------------------


def add(archive: Handle, path: Path | str) -> Indexed:
    """Add a folder or file of notes to the archive's knowledge base (or refresh it, when it is there already)."""
    root = resolve(path)
    done = refresh(archive, root)  # first: a folder refused (a PDF by name, too many files) is not added
    with archive._writing():
        archive.db.execute(
            "INSERT INTO knowledge_roots (path, added_at, refreshed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET refreshed_at = excluded.refreshed_at",
            [str(root), now(), now()],
        )
    return done


def refresh(archive: Handle, root: Path) -> Indexed:
    """Bring the index of `root` in step with its files: new and changed files (size or mtime moved, then sha256
    changed) are read into entries again, removed files' entries dropped. Files are read before the one write
    transaction, so a refresh holds the archive's write lock only to write. A file that changes while it is read (gone,
    grown past the cap, no longer a regular file) keeps its entries until the next refresh; a root that is gone is a
    KnowledgeError that drops nothing (a resume or a run's refresh searches the index as it stands)."""
    done = Indexed(root)
    if not root.exists():  # gone (unmounted, moved, deleted): the index stands as it is, nothing recorded is lost
        raise KnowledgeError(
            f"the knowledge folder {root} is not there any more; its {_count(archive, root)} entries are kept as "
            "they stand (put the folder back, or add it again where it is now)"
        )
    files, done.skipped = files_of(root)
    stored = {
        row[0]: row[1:]
        for row in archive.db.execute(
            f"SELECT path, size, mtime_ns, sha256 FROM knowledge_files WHERE {_UNDER}", [*_under(root)]
        )
    }
    fresh: dict[str, tuple[int, int, str, list[tuple[str, str]] | None]] = {}
    for path in list(files):
        known = stored.get(str(path))
        try:
            stat = path.stat()
            if known is not None and tuple(known[:2]) == (stat.st_size, stat.st_mtime_ns):
                continue
            data = read_note(path, follow=path == root or _inside(path, root))
        except (OSError, KnowledgeError) as err:  # removed, replaced or grown since it was listed: left as it stood
            files.remove(path)
            done.skipped.append((str(path), f"changed while it was read ({err}); read on the next refresh"))
            if known is not None:
                stored.pop(str(path))  # its entries stay: not in `gone`
            continue
        digest = hashlib.sha256(data).hexdigest()
        entries = None if known is not None and known[2] == digest else read_entries(path, data)
        fresh[str(path)] = (stat.st_size, stat.st_mtime_ns, digest, entries)
    gone = sorted(set(stored) - {str(p) for p in files})
    with archive._writing():
        for path in gone:
            archive.db.execute("DELETE FROM knowledge_entries WHERE path = ?", [path])
            archive.db.execute("DELETE FROM knowledge_files WHERE path = ?", [path])
        for path, (size, mtime_ns, digest, entries) in fresh.items():
            row = {"path": path, "sha256": digest, "size": size, "mtime_ns": mtime_ns, "indexed_at": now()}
            if entries is None:  # touched, same bytes: its entries stand
                archive.db["knowledge_files"].update(path, row)
                continue
            archive.db.execute("DELETE FROM knowledge_entries WHERE path = ?", [path])
            archive.db["knowledge_entries"].insert_all(
                {"path": path, "seq": seq, "title": title, "text": text, "sha256": _sha(title, text)}
                for seq, (title, text) in enumerate(entries)
            )
            archive.db["knowledge_files"].upsert({**row, "entries": len(entries)}, pk="path")
            done.reindexed.append(path)
        archive.db.execute("UPDATE knowledge_roots SET refreshed_at = ? WHERE path = ?", [now(), str(root)])
    done.removed = gone
    done.files = len(files)
    done.entries = _count(archive, root)
    return done


def _count(archive: Handle, root: Path) -> int:
    return int(
        archive.db.execute(f"SELECT COUNT(*) FROM knowledge_entries WHERE {_UNDER}", [*_under(root)]).fetchone()[0]
    )


def _sha(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()


_UNDER = "(path = ? OR substr(path, 1, ?) = ?)"
"""A path at or under a root (`_under(root)` gives the arguments): substr, not LIKE, so _ and % in names are literal."""


def _under(root: Path) -> tuple[str, int, str]:
    inside = str(root).rstrip("/") + "/"
    return str(root), len(inside), inside


def roots(archive: Handle) -> list[dict[str, Any]]:
    """The folders and files added, each with its files and entries now indexed and whether it still exists."""
    found = []
    for path, added_at, refreshed_at in archive.db.execute(
        "SELECT path, added_at, refreshed_at FROM knowledge_roots ORDER BY path"
    ).fetchall():
        root = Path(path)
        files, entries = archive.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(entries), 0) FROM knowledge_files WHERE {_UNDER}", [*_under(root)]
        ).fetchone()
        found.append(
            {
                "root": path,
                "name": display_name(root, root),
                "files": files,
                "entries": entries,
                "added_at": added_at,
                "refreshed_at": refreshed_at,
                "exists": root.exists(),
            }
        )
    return found


def entries(archive: Handle, root: Path | None = None) -> list[Entry]:
    """Every entry indexed (under `root`, when given), by file and place in it."""
    where, args = (f"WHERE {_UNDER}", list(_under(root))) if root is not None else ("", [])
    rows = archive.db.execute(
        f"SELECT id, path, title, text, sha256 FROM knowledge_entries {where} ORDER BY path, seq", args
    ).fetchall()
    known = [Path(r["root"]) for r in roots(archive)] if root is None else [root]
    return [Entry(i, p, _source(Path(p), known), t, x, s) for i, p, t, x, s in rows]


def display_name(path: Path, root: Path) -> str:
    """How a file is named where it is shown: the added folder's name and the file's path inside it (a file added on
    its own: its name), so no prompt and no record carries the machine's own path."""
    if path == root or root.is_file() or not path.is_relative_to(root):
        return path.name
    return f"{root.name}/{path.relative_to(root).as_posix()}"


def _source(path: Path, known: Sequence[Path]) -> str:
    containing = [root for root in known if path == root or path.is_relative_to(root)]
    return display_name(path, max(containing, key=lambda r: len(str(r)))) if containing else path.name


# -- searching --------------------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in into is it its
    may more most much no not of on one or our so such than that the their them then there these they this those to
    too was we were what when where which while who why will with would you your also each other only over under very
    self def return import class super forward init none true false int float tuple list dict str bool torch nn
    module net hparams math shape num lambda pass else elif range len print args kwargs""".split()
)
"""Words that say nothing of an idea: English glue, and the words every candidate module holds."""
_WORD = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def terms(text: str, limit: int = MAX_TERMS) -> list[str]:
    """The word terms of `text`, in order of first appearance, lower-cased, without stopwords and numbers; an
    identifier also gives its camel-case parts (BatchNorm2d: batchnorm2d, batch, norm). At most `limit`."""
    found: dict[str, None] = {}
    for word in _WORD.findall(text.replace("\x00", "")):
        for term in (word, *(_CAMEL.findall(word) if not word.islower() else ())):
            term = term.lower()
            if 2 <= len(term) <= 40 and not term.isdigit() and term not in _STOPWORDS:
                found.setdefault(term, None)
                if len(found) >= limit:
                    return list(found)
    return list(found)


def match_expression(text: str) -> str | None:
    """`text` as an FTS5 query that cannot be a syntax error: its terms, each a quoted string, joined by OR (None when
    it holds no term). bm25 then ranks the entries that share the most telling terms first."""
    found = terms(text)
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in found) if found else None


def search(archive: Handle, query: str, k: int = 5, under: Sequence[Path] = ()) -> list[Entry]:
    """The `k` entries most relevant to `query` (any text: terms are quoted, see `match_expression`), best first, from
    the files under the roots `under` (none given: the whole base). Titles weigh twice the text."""
    expression = match_expression(query)
    if expression is None or k < 1:
        return []
    known = list(under) or [Path(r["root"]) for r in roots(archive)]
    where = " OR ".join([_UNDER.replace("path", "e.path")] * len(under))
    args: list[Any] = [expression, *(arg for root in under for arg in _under(root)), k]
    rows = archive.db.execute(
        "SELECT e.id, e.path, e.title, e.text, e.sha256, bm25(knowledge_entries_fts, 2.0, 1.0) AS rank "
        "FROM knowledge_entries_fts JOIN knowledge_entries e ON e.id = knowledge_entries_fts.rowid "
        f"WHERE knowledge_entries_fts MATCH ? {f'AND ({where})' if where else ''} ORDER BY rank, e.id LIMIT ?",
        args,
    ).fetchall()
    return [Entry(i, p, _source(Path(p), known), t, x, s, r) for i, p, t, x, s, r in rows]


def proposal_query(parent: dict[str, Any] | None, notebook: dict[str, Any] | None, fallback: str) -> str:
    """What a proposal looks for: the parent's analysis, the run's latest notebook entry, the parent's name and its
    code, in that order (the first terms are kept when there are many: the words about the parent before the
    identifiers of its code); `fallback` (the task's card) when there is neither."""
    parent = parent or {}
    parts = [parent.get("analysis"), (notebook or {}).get("text"), parent.get("name"), parent.get("code")]
    return "\n".join(str(part) for part in parts if part) or fallback


def for_proposal(
    archive: Handle,
    root: Path,
    k: int,
    parent: dict[str, Any] | None,
    notebook: dict[str, Any] | None,
    fallback: str,
) -> list[dict[str, Any]]:
    """The entries a proposal's prompt shows (as `Entry.shown`): the `k` most relevant, under `root` (as `resolve`
    gave it), to its parent, the latest analysis and the notebook."""
    found = search(archive, proposal_query(parent, notebook, fallback), k, [root])
    return [entry.shown() for entry in found]


def reference(entry: dict[str, Any]) -> dict[str, Any]:
    """What a candidate records of an entry it was shown: where it comes from, its title and sha256 (not its text,
    which the candidate's prompt holds)."""
    return {key: entry[key] for key in ("source", "title", "sha256")}
