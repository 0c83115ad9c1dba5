"""Materials Project through mp-api, cached on disk by query.

``pull`` runs the summary searches of the configured ``data.scope`` (``MPQuery``), converts
each structure to its conventional standard cell and writes the result atomically to
``<cache_dir>/summary-<query hash>.json.gz``. ``load_cache`` reads it back as
``Entries`` of source ``mp``; a cache written before crystals carried Wyckoff sites is
converted again from its stored structures once, on first load, and rewritten. The API key
comes from ``MP_API_KEY`` only; it is handed to mp-api and never logged, cached or returned.
Without a key nothing touches the network: ``pull`` fails at once with a message saying what to do.

Example:
    >>> query = MPQuery.from_settings(cfg.space, cfg.data.mp, scope=cfg.data.scope)  # doctest: +SKIP
    >>> pull(query, cache_dir=Path(cfg.data.mp.cache_dir))  # doctest: +SKIP
    PullReport(path=PosixPath('.aloop/mp_cache/summary-3f2a....json.gz'), entries=9331, ...)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element, Structure
from tqdm.auto import tqdm

from aloop.config import MPSettings, SpaceSettings
from aloop.data.convert import PROPERTIES, SCOPES, Entries
from aloop.files import write_atomic
from aloop.space.crystal import Crystal, CrystalBatch

FIELDS = ("material_id", "structure", "formation_energy_per_atom", "band_gap", "energy_above_hull", "symmetry",
          "energy_per_atom")
SOURCE = "mp"
"""Fresh mp-api data (MP2020-compatible mixing): a different measurement from legacy dumps."""
API_KEY_ENV = "MP_API_KEY"
MAX_Z = 94
"""Materials Project has no element beyond plutonium."""
_CACHE_VERSION = 1
_CRYSTALS_VERSION = 4
"""Version of the records' crystals (2: with Wyckoff sites, 3: in pyxtal's setting, 4: lattice in that setting too). Kept apart from ``_CACHE_VERSION`` (part of
the file name, which ``aloop.hull`` reads too) so that an older cache is upgraded in place, not lost."""


class MPError(RuntimeError):
    """The Materials Project could not be queried; the message says why and what to do."""


@dataclass(frozen=True)
class MPQuery:
    """The summary searches of one scope (``aloop.data.convert.SCOPES``), non-deprecated materials of at most
    ``max_sites`` sites in Materials Project's (usually primitive) cell.

    - ``space``: one search, materials made only of ``elements``, at most ``max_elements`` of them:
      hundreds of materials for a ternary space (mp_cgcnn36k has 33 Li-Mn-O entries).
    - ``neighbours``: one search per element of ``elements``, materials with that element and none
      of the elements before it (so the searches are disjoint), any number of elements: every
      material sharing an element with the space. Expected size, from mp_cgcnn36k's shares
      scaled to Materials Project's ~155,000 materials with ``max_sites`` 20: ~30,000 for
      Li-Mn-O, ~60,000 for the 17 elements of configs/default.yaml.
    - ``all``: one search without element filters: ~80,000 materials with ``max_sites`` 20
      (54% of mp_cgcnn36k's entries have at most 20 sites); converting them to conventional
      cells takes about an hour of one core (~50 ms each), once per pull.

    Attributes:
        elements: the space's element symbols (empty for ``all``).
        max_elements: at most this many distinct elements (``None``: any, the wide scopes).
        max_sites: at most this many sites in Materials Project's cell.
        endpoint: the API's base URL; ``None`` for mp-api's default.
        scope: ``space``, ``neighbours`` or ``all``.
    """

    elements: tuple[str, ...]
    max_elements: int | None
    max_sites: int
    endpoint: str | None = None
    scope: str = "space"

    @classmethod
    def from_settings(cls, space: SpaceSettings, mp: MPSettings, *, scope: str = "space") -> MPQuery:
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {list(SCOPES)}")
        elements = () if scope == "all" else tuple(sorted(space.elements, key=lambda s: Element(s).Z))
        return cls(elements=elements, max_elements=space.max_elements if scope == "space" else None,
                   max_sites=mp.max_sites, endpoint=mp.endpoint, scope=scope)

    @property
    def key(self) -> str:
        """Hash of the query (and of the cache format), naming its cache file."""
        query = asdict(self)
        if self.scope == "space":  # caches of the space pulled before scopes existed keep their name
            del query["scope"]
        text = json.dumps({**query, "fields": FIELDS, "version": _CACHE_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def searches(self) -> list[dict[str, Any]]:
        """Keyword arguments of each ``MPRester().materials.summary.search`` call; their results are disjoint."""
        common = {"num_sites": (1, self.max_sites), "deprecated": False, "fields": list(FIELDS)}
        if self.scope == "all":
            return [common]
        if self.scope == "neighbours":
            return [{"elements": [el], **({"exclude_elements": list(self.elements[:i])} if i else {}), **common}
                    for i, el in enumerate(self.elements)]
        allowed = set(self.elements)
        excluded = [Element.from_Z(z).symbol for z in range(1, MAX_Z + 1) if Element.from_Z(z).symbol not in allowed]
        return [{"exclude_elements": excluded, "num_elements": (1, self.max_elements), **common}]


@dataclass(frozen=True)
class PullReport:
    """What ``pull`` wrote: the cache file, entries, the database version, when."""

    path: Path
    entries: int
    unconverted: int
    db_version: str
    pulled_at: str


def cache_file(query: MPQuery, cache_dir: Path) -> Path:
    return cache_dir / f"summary-{query.key}.json.gz"


def pull(query: MPQuery, *, cache_dir: Path, chunk_size: int = 1000, progress: bool = True) -> PullReport:
    """Search the Materials Project and (re)write the query's cache file atomically.

    Raises:
        MPError: no key in ``MP_API_KEY``, a rejected key, an unreachable or failing server;
            the cache is then left as it was.
    """
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        raise MPError(f"{API_KEY_ENV} is not set: get a key at https://materialsproject.org/api and "
                      f"`export {API_KEY_ENV}=...`, or point data.local_path at an offline dump")
    docs, db_version = _search(query, api_key=api_key, chunk_size=chunk_size, progress=progress)
    records = [_record(doc) for doc in tqdm(docs, desc="conventional cells", disable=not progress)]
    pulled_at = datetime.now(UTC).isoformat(timespec="seconds")
    payload = {"query": asdict(query), "db_version": db_version, "pulled_at": pulled_at,
               "crystals_version": _CRYSTALS_VERSION, "records": records}
    path = cache_file(query, cache_dir)
    write_atomic(path, gzip.compress(json.dumps(payload).encode()))
    unconverted = sum(r["crystal"] is None for r in records)
    return PullReport(path=path, entries=len(records), unconverted=unconverted, db_version=db_version,
                      pulled_at=pulled_at)


def cache_records(path: Path) -> list[dict[str, Any]]:
    """The records of a cache file (``cache_file``), as pulled: material id, properties, structure, crystal."""
    return json.loads(gzip.decompress(path.read_bytes()))["records"]


def load_cache(query: MPQuery, *, cache_dir: Path) -> Entries | None:
    """The cached entries of ``query``, or ``None`` when it was never pulled.

    Raises:
        MPError: the cache file exists but cannot be read.
    """
    path = cache_file(query, cache_dir)
    if not path.exists():
        return None
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()))
        records = payload["records"]
    except (OSError, ValueError, KeyError) as err:
        raise MPError(f"{path}: unreadable Materials Project cache ({err}); run `aloop data pull` again") from None
    if payload.get("crystals_version", 1) < _CRYSTALS_VERSION:
        records = [{**r, "crystal": _crystal(r.get("structure"))} for r in records]
        write_atomic(path, gzip.compress(json.dumps(
            {**payload, "crystals_version": _CRYSTALS_VERSION, "records": records}).encode()))
    converted = [r for r in records if r["crystal"] is not None]
    crystals = [Crystal.from_dict(r["crystal"]) for r in converted]
    elements = sorted({el.symbol for c in crystals for el in c.composition}, key=lambda s: Element(s).Z)
    batch = CrystalBatch.from_crystals(crystals, elements)
    failed = len(records) - len(converted)
    return Entries(
        source=SOURCE, ids=tuple(r["material_id"] for r in converted), crystals=batch,
        properties={p: np.array([np.nan if r.get(p) is None else r[p] for r in converted], dtype=np.float64)
                    for p in PROPERTIES},
        dropped={"symmetry_failed": failed} if failed else {},
    )


def _search(query: MPQuery, *, api_key: str, chunk_size: int, progress: bool) -> tuple[list[dict], str]:
    """Raw summary documents (dicts) and the database version, through mp-api's ``MPRester``."""
    import requests
    from mp_api.client import MPRester
    from mp_api.client.core import MPRestError

    where = query.endpoint or "the Materials Project API"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mp-api warns about its own settings on every call
            with MPRester(api_key, endpoint=query.endpoint, use_document_model=False,
                          mute_progress_bars=not progress) as rester:
                docs = [dict(d) for kwargs in query.searches()
                        for d in rester.materials.summary.search(**kwargs, chunk_size=chunk_size)]
                return docs, str(rester.db_version or "")
    except (ValueError, KeyError) as err:  # a heartbeat that is not the API's JSON (requests' JSON errors too)
        raise MPError(f"{where} did not answer like the Materials Project API ({type(err).__name__}: {err}); "
                      "check data.mp.endpoint; the cache was left as it was") from None
    except requests.RequestException as err:
        raise MPError(f"cannot reach {where} ({type(err).__name__}); check the network or data.mp.endpoint; "
                      "the cache was left as it was") from None
    except MPRestError as err:
        raise MPError(_explain(str(err), where)) from None


def _explain(message: str, where: str) -> str:
    status = re.search(r"status code (\d{3})", message)
    if "32 characters" in message:
        return f"{API_KEY_ENV} is not a Materials Project API key (valid keys have 32 characters)"
    if status and status.group(1) in ("401", "403"):
        return (f"{where} rejected the API key in {API_KEY_ENV} (HTTP {status.group(1)}); check it at "
                "https://materialsproject.org/api; the cache was left as it was")
    detail = message.splitlines()[-1] if message else "no message"
    code = f"HTTP {status.group(1)}" if status else "error"
    return f"{where} answered with an {code} ({detail}); the cache was left as it was"


def _record(doc: dict[str, Any]) -> dict[str, Any]:
    """One cache record: id, properties, structure, and the conventional-cell crystal (``None`` if spglib fails)."""
    return {"material_id": str(doc["material_id"]), **{p: doc.get(p) for p in PROPERTIES},
            "symmetry": doc.get("symmetry"), "structure": doc.get("structure"),
            "crystal": _crystal(doc.get("structure"))}


def _crystal(structure: dict[str, Any] | None) -> dict[str, Any] | None:
    """``Crystal.as_dict()`` (Wyckoff sites included) of a pymatgen structure dict; ``None`` if it cannot be."""
    try:
        return Crystal.from_structure(Structure.from_dict(structure)).as_dict()  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - spglib/pymatgen raise many types; the entry is counted as dropped
        return None
