"""The in-process (L1) cache of the tile view: bounded in bytes, valid per refresh.

The tile view (geo.hunt_tile_mv) changes only when it is refreshed, so a tile
read from it stays true until the next refresh, however long that is. An
entry here holds the tile (or its absence) as of one refresh of the view and
answers while that refresh is the newest this process knows of (`epoch`).
The process learns of a newer refresh from its own refreshes, from every
read of the view (each carries the view's refresh time) and from polling it
(Geo.refresh_loop, every GEO_TILE_VIEW_POLL_S): so another replica's refresh
is seen here within that bound, as the old L1 TTL bounded it before.

When a newer refresh is seen the entries are not dropped (dropping them
would send every following GetTile to Postgres at once): they are
revalidated in one query of the cached cells' versions (`revalidate`), and
those whose version did not change are carried over to the new refresh.

Bounded by the bytes of tile data held (least recently used first), and by
entries, so that absent tiles and tiny ones cannot grow it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from services.geo.model import TileRead

Cell = tuple[str, int, int]

#: What an entry costs beyond its data (the key, the records, the map's slot):
#: measured with tracemalloc on CPython 3.11, rounded up.
ENTRY_OVERHEAD_BYTES = 400


class TileCache:
    """An LRU of TileReads, bounded in bytes and entries, valid per refresh."""

    def __init__(self, max_bytes: int, max_entries: int, max_tile_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._max_tile_bytes = max_tile_bytes
        self._data: OrderedDict[Cell, TileRead] = OrderedDict()
        self._bytes = 0
        #: The newest refresh of the view this process knows of (its time, Unix s).
        self.epoch = 0.0

    @staticmethod
    def _cost(read: TileRead) -> int:
        return ENTRY_OVERHEAD_BYTES + (len(read.tile.data) if read.tile is not None else 0)

    def get(self, cell: Cell) -> TileRead | None:
        """The cell as of the newest known refresh; None when absent or older."""
        read = self._data.get(cell)
        if read is None or read.refreshed_at.timestamp() < self.epoch:
            return None
        self._data.move_to_end(cell)
        return read

    def put(self, cell: Cell, read: TileRead) -> bool:
        """Keeps `read` unless it is too large, or older than what is held."""
        if read.tile is not None and len(read.tile.data) > self._max_tile_bytes:
            return False
        held = self._data.get(cell)
        if held is not None:
            if held.refreshed_at > read.refreshed_at:
                return False
            self._bytes -= self._cost(held)
        self._data[cell] = read
        self._data.move_to_end(cell)
        self._bytes += self._cost(read)
        while self._data and (self._bytes > self._max_bytes or len(self._data) > self._max_entries):
            _, evicted = self._data.popitem(last=False)
            self._bytes -= self._cost(evicted)
        return True

    def held(self, refreshed_before: float) -> dict[str, list[Cell]]:
        """The cells held as of a refresh older than `refreshed_before`, per hunt."""
        cells: dict[str, list[Cell]] = {}
        for cell, read in self._data.items():
            if read.refreshed_at.timestamp() < refreshed_before:
                cells.setdefault(cell[0], []).append(cell)
        return cells

    def carry_over(self, versions: dict[Cell, int | None], refreshed_at: datetime) -> int:
        """After the view's refresh at `refreshed_at`: each cell of `versions`
        (its version in the new view, None when absent) that is unchanged is
        kept as of that refresh, every other one dropped. Returns how many
        were kept."""
        kept = 0
        for cell, version in versions.items():
            read = self._data.get(cell)
            if read is None or read.refreshed_at >= refreshed_at:
                continue
            held_version = read.tile.version if read.tile is not None else None
            if held_version == version:
                self._data[cell] = replace(read, refreshed_at=refreshed_at)
                kept += 1
            else:
                del self._data[cell]
                self._bytes -= self._cost(read)
        return kept

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)
