"""How a rollout's prompt and response are stored and searched (issue 17).

* The texts are one zlib blob per rollout (`rollout_texts.body`): a length-prefixed pair of UTF-8
  strings, level 1 (the sink compresses ~45 MB/s of text at 20k rollouts/s on one core).
* The trace list shows `rollouts.preview` (the response's first PREVIEW_CHARS characters), so a
  page of 50 never decompresses anything.
* Search is by words: a rollout's terms are the distinct lower-case alphanumeric words of its
  prompt, response and extracted answer. PostgreSQL keeps them as a tsvector (`rollout_texts.terms`,
  GIN index); SQLite in a contentless FTS5 table `rollout_search` (rowid = rollout id), which
  stores only the index. A query matches rollouts holding every word of it, the last one as a
  prefix ("wai" finds "wait"), so typing narrows the list as it did with the substring search.

A contentless FTS5 table forgets a row only when told the terms it was given: `forget_search`
recomputes them from the stored blob (resumes and deleted runs; never on the ingest fast path).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable

from sqlalchemy import column, literal_column, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

PREVIEW_CHARS = 240
SEARCH_TABLE = "rollout_search"  # SQLite only; its shadow tables start with the same name
TERMS_INDEX = "ix_rollout_texts_terms"  # PostgreSQL only
_WORD = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer calls a token
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


# ------------------------------------------------------------------------------------- terms
def words(text_: str) -> list[str]:
    return [w for w in _WORD.findall(text_.lower()) if len(w) <= _MAX_TERM]


def terms(prompt: str, response: str, extracted: str | None) -> str:
    """The distinct words, space-separated: the FTS5 document (SQLite), or a tsvector literal
    once quoted (PostgreSQL; words are alphanumeric, so quoting needs no escaping)."""
    return " ".join(sorted(set(words(f"{prompt}\n{response}\n{extracted or ''}"))))


def tsvector_literal(terms_: str) -> str:
    return " ".join(f"'{w}'" for w in terms_.split())


def search_condition(dialect: str, q: str, id_col: ColumnElement, terms_col: ColumnElement,
                     id_range: tuple[int, int] | None) -> ColumnElement | None:
    """A WHERE clause matching rollouts whose terms hold every word of `q` (None: `q` has no word).
    `id_range` (the run's smallest and largest rollout id) bounds the FTS5 scan to the run."""
    ws = words(q)
    if not ws:
        return None
    if dialect == "postgresql":
        query = " & ".join(f"'{w}'" for w in ws) + ":*"
        return terms_col.op("@@")(literal_column("CAST(:tsq AS tsquery)").bindparams(tsq=query))
    query = " AND ".join(f'"{w}"' for w in ws) + "*"
    lo, hi = id_range or (0, 0)
    # FTS5 seeks its doclists by rowid, so the range keeps a common word to the run's own ids
    hits = text(f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH :ftsq "
                "AND rowid >= :lo AND rowid <= :hi").bindparams(ftsq=query, lo=lo, hi=hi)
    return id_col.in_(hits.columns(column("rowid")))


# ------------------------------------------------------------------------------------- index upkeep
def index_search(conn: Connection, rows: Iterable[tuple[int, str]]) -> None:
    """SQLite: add (rollout id, terms) to the FTS5 table (PostgreSQL keeps terms in its row)."""
    rows = [{"rid": rid, "t": t} for rid, t in rows]
    if rows and conn.dialect.name == "sqlite":
        conn.execute(text(f"INSERT INTO {SEARCH_TABLE}(rowid, terms) VALUES (:rid, :t)"), rows)


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
                     [{"rid": rid, "t": terms(*unpack(body), ex)} for rid, body, ex in rows])


def create_search_table(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        # contentless (the text is in the blob), no positions, no per-row sizes: the index only
        conn.execute(text(f"CREATE VIRTUAL TABLE IF NOT EXISTS {SEARCH_TABLE} USING fts5(terms, content='', "
                          "detail='none', columnsize=0)"))


def is_search_table(name: str | None) -> bool:
    return bool(name) and name.startswith(SEARCH_TABLE)

