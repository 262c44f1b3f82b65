"""How a rollout's prompt and response are stored and searched (issue 17).

* The texts are one zlib blob per rollout (`rollout_texts.body`): a length-prefixed pair of UTF-8
  strings, level 1 (the sink compresses ~45 MB/s of text at 20k rollouts/s on one core).
* The trace list shows the response's first PREVIEW_CHARS characters: `response_preview`
  decompresses only the head of each blob (a stored copy cost ~250 bytes per rollout; 0011).
* Search is by words: a rollout's document is its prompt, response and extracted answer; its
  words are runs of ASCII letters and digits (lower-cased) and of non-ASCII characters. PostgreSQL
  keeps the distinct words as a tsvector (`rollout_texts.terms`, GIN index; computed by the sink,
  as `to_tsvector` costs ~250 µs per response); SQLite indexes the document in a contentless FTS5
  table `rollout_search` (rowid = rollout id, `ascii` tokenizer: the same words), which stores
  only the index. A query matches rollouts holding every word of it (whole words).

A contentless FTS5 table forgets a row only when told the document it was given: `forget_search`
rebuilds it from the stored blob (resumes and deleted runs; never on the ingest fast path).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from sqlalchemy import column, select, table, text
from sqlalchemy.engine import Connection

PREVIEW_CHARS = 240
SEARCH_TABLE = "rollout_search"  # SQLite only; its shadow tables start with the same name
TERMS_INDEX = "ix_rollout_texts_terms"  # PostgreSQL only
# the FTS5 table as a FROM item: its rowid is the rollout id, MATCH goes against its own name
SEARCH = table(SEARCH_TABLE, column("rowid"), column(SEARCH_TABLE))
_MAX_TERM = 64
_LEN = struct.Struct("<I")


# ------------------------------------------------------------------------------------- texts
def pack(prompt: str, response: str) -> bytes:
    p = (prompt or "").encode()
    return zlib.compress(_LEN.pack(len(p)) + p + (response or "").encode(), 1)


def unpack(body: bytes | None) -> tuple[str, str]:
    if not body:
        return "", ""
    raw = zlib.decompress(body)
    (n,) = _LEN.unpack_from(raw)
    return raw[4:4 + n].decode(), raw[4 + n:].decode()


def preview(response: str | None) -> str:
    resp = response or ""
    return resp if len(resp) <= PREVIEW_CHARS else resp[:PREVIEW_CHARS] + "…"


def response_preview(body: bytes | None) -> str:
    """`preview` of the blob's response, decompressing only the prompt and the response's first
    4 × PREVIEW_CHARS + 1 bytes (a character is at most 4 UTF-8 bytes, so getting all of those bytes
    means the response has more than PREVIEW_CHARS characters)."""
    if not body:
        return ""
    stream = zlib.decompressobj()
    (n,) = _LEN.unpack(stream.decompress(body, _LEN.size))
    need = n + 4 * PREVIEW_CHARS + 1
    raw = stream.decompress(stream.unconsumed_tail, need)
    response = raw[n:].decode(errors="ignore")  # the cut may split the last character
    return response[:PREVIEW_CHARS] + "…" if len(raw) == need else preview(response)


# ------------------------------------------------------------------------------------- terms
# Words are runs of ASCII letters and digits (lower-cased) and non-ASCII characters, as FTS5's
# `ascii` tokenizer splits them. bytes.translate + split does it at C speed: a regex over a
# 2,000-character response costs the sink's writer thread ~2.5× as much.
_FOLD = bytes(c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 or c >= 128 else 32
              for c in range(256))


def words(text_: str) -> list[str]:
    return [w.decode() for w in dict.fromkeys(text_.encode().translate(_FOLD).split()) if len(w) <= _MAX_TERM]


def document(prompt: str, response: str, extracted: str | None) -> str:
    """What is searched: SQLite's FTS5 tokenizes it itself (in C), PostgreSQL gets `terms` of it."""
    return f"{prompt}\n{response}\n{extracted or ''}"


def terms(doc: str) -> str:
    """The distinct words of a document, space-separated; quoted by `tsvector_literal` they are a
    tsvector (words hold no quote or backslash, so quoting needs no escaping)."""
    distinct = set(doc.encode().translate(_FOLD).split())
    if max(map(len, distinct), default=0) > _MAX_TERM:  # PostgreSQL refuses lexemes over 2 kB
        distinct = {w for w in distinct if len(w) <= _MAX_TERM}
    return b" ".join(distinct).decode()


def tsvector_literal(terms_: str) -> str:
    return "'" + terms_.replace(" ", "' '") + "'" if terms_ else ""


def search_query(dialect: str, q: str) -> str | None:
    """`q` as the dialect's full-text query: every word (None: no word). Whole words only: a prefix
    query makes FTS5 merge the doclists of every matching term over the whole table before the
    run's id range applies (~130 ms for a common prefix at 1M rollouts, against < 1 ms)."""
    ws = words(q)
    if not ws:
        return None
    if dialect == "postgresql":
        return " & ".join(f"'{w}'" for w in ws)
    return " AND ".join(f'"{w}"' for w in ws)


# ------------------------------------------------------------------------------------- index upkeep
def index_search(conn: Connection, rows: Iterable[tuple[int, str]]) -> None:
    """SQLite: add (rollout id, document) to the FTS5 table (PostgreSQL keeps terms in its row)."""
    rows = list(rows)
    if rows and conn.dialect.name == "sqlite":  # driver-level: SQLAlchemy's per-row handling cost ~3 µs
        conn.exec_driver_sql(f"INSERT INTO {SEARCH_TABLE}(rowid, terms) VALUES (?, ?)", rows)


def forget_search(conn: Connection, rollout_ids) -> None:  # noqa: ANN001 - a list of ids or a subquery
    """SQLite: remove these rollouts from the FTS5 table, before their rows change or go."""
    if conn.dialect.name != "sqlite":
        return
    texts = table("rollout_texts", column("rollout_id"), column("body"))
    rollouts = table("rollouts", column("id"), column("extracted"))
    rows = conn.execute(select(texts.c.rollout_id, texts.c.body, rollouts.c.extracted)
                        .join(rollouts, rollouts.c.id == texts.c.rollout_id)
                        .where(texts.c.rollout_id.in_(rollout_ids))).all()
    if rows:
        conn.execute(text(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, terms) VALUES ('delete', :rid, :t)"),
                     [{"rid": rid, "t": document(*unpack(body), ex)} for rid, body, ex in rows])


def create_search_table(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        # contentless (the text is in the blob), no positions, no per-row sizes: the index only
        conn.execute(text(f"CREATE VIRTUAL TABLE IF NOT EXISTS {SEARCH_TABLE} USING fts5(terms, content='', "
                          "detail='none', columnsize=0, tokenize='ascii')"))


def is_search_table(name: str | None) -> bool:
    return bool(name) and name.startswith(SEARCH_TABLE)

