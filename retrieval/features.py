"""Candidates and features for the learned ranker, one code path for training, evaluation and serving.

A customer's purchases become per-(customer, item) statistics (how often, how recently, at which cadence),
joined with item statistics (popularity, trend, how often buyers come back for it) and with per-source scores
(EASE and cosine item neighbours, an SVD fold-in, text similarity to the customer's taste). The same function
builds the training rows (many customers at once) and the rows for one customer at request time, so what the
model learned is exactly what it is served.

One module, over 600 lines, on purpose: split into training and serving halves, the two paths would drift
apart, and a feature served unlike it was learned fails silently.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from tailor.core.errors import DataError
from tailor.core.utc import utc_timestamp

__all__ = [
    "FEATURES",
    "CandidateLimits",
    "Candidates",
    "CollabModel",
    "History",
    "ItemStats",
    "build_candidates",
    "fit_collab",
    "item_stats",
    "spd_inverse",
    "to_day",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DAY = 86400.0
FEATURES = (
    "bought",
    "orders",
    "qty_log",
    "days_last",
    "days_first",
    "decay30",
    "decay120",
    "gap",
    "due",
    "share",
    "c_orders",
    "c_days_last",
    "c_distinct",
    "c_tenure",
    "c_gap",
    "i_pop_log",
    "i_recent",
    "i_trend",
    "i_repeat",
    "i_age",
    "i_days_sale",
    "s_ease",
    "s_ease_norm",
    "s_ease_recent",
    "s_knn",
    "s_svd",
    "s_text",
    "orders_rel",
    "decay_rel",
    "knn_rel",
    "text_rel",
)
_F = {name: i for i, name in enumerate(FEATURES)}
SOURCES = ("repeat", "collaborative", "text", "trending", "popular")


@dataclass(frozen=True)
class History:
    """Purchases as integer arrays: customer row, item column, time in days (epoch), order code."""

    cust: I64
    item: I64
    day: F64
    order: I64
    n_customers: int

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, customer_index: Mapping[str, int], item_index: Mapping[str, int]
    ) -> History:
        """Rows whose item is not in ``item_index`` are dropped (the model knows nothing about them)."""
        known = frame[frame["item_id"].isin(item_index) & frame["customer_id"].isin(customer_index)]
        ts = pd.to_datetime(known["timestamp"], utc=True)
        if "order_id" in known.columns:
            order_codes = pd.factorize(known["order_id"].astype(str))[0]
        else:
            # Without order ids a day's purchases are one basket.
            order_codes = pd.factorize(ts.dt.floor("D"))[0]
        return cls(
            cust=known["customer_id"].map(customer_index).to_numpy(np.int64),
            item=known["item_id"].map(item_index).to_numpy(np.int64),
            day=_days(ts),
            order=np.asarray(order_codes, dtype=np.int64),
            n_customers=len(customer_index),
        )

    @classmethod
    def from_log(
        cls, item_ids: Sequence[str], days: F64, orders: Sequence[str], item_index: Mapping[str, int]
    ) -> History:
        """One customer's purchases without pandas: the request path, where a DataFrame costs milliseconds."""
        keep = [n for n, i in enumerate(item_ids) if i in item_index]
        codes: dict[str, int] = {}
        return cls(
            cust=np.zeros(len(keep), dtype=np.int64),
            item=np.fromiter((item_index[item_ids[n]] for n in keep), dtype=np.int64, count=len(keep)),
            day=np.asarray(days, dtype=np.float64)[keep],
            order=np.fromiter((codes.setdefault(orders[n], len(codes)) for n in keep), np.int64, len(keep)),
            n_customers=1,
        )

    def before(self, day: float) -> History:
        keep = self.day < day
        return History(self.cust[keep], self.item[keep], self.day[keep], self.order[keep], self.n_customers)


def _days(ts: pd.Series) -> F64:
    values = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return np.asarray(values / 1e9 / DAY, dtype=np.float64)


def to_day(moment: pd.Timestamp) -> float:
    return float(utc_timestamp(moment).value / 1e9 / DAY)


@dataclass(frozen=True)
class ItemStats:
    """Per-item columns at one moment, aligned with the item index."""

    pop: F64
    recent: F64
    trend: F64
    repeat: F64
    age: F64
    days_sale: F64

    def matrix(self) -> F64:
        return np.stack([self.pop, self.recent, self.trend, self.repeat, self.age, self.days_sale])


def item_stats(history: History, n_items: int, now_day: float) -> ItemStats:
    buyers_pairs = np.unique(history.cust * n_items + history.item)
    pair_item = buyers_pairs % n_items
    pop = np.bincount(pair_item, minlength=n_items).astype(np.float64)
    orders = np.unique(np.stack([history.cust, history.item, history.order]), axis=1)
    pair_orders = np.unique(orders[0] * n_items + orders[1], return_counts=True)
    repeaters = np.bincount(pair_orders[0][pair_orders[1] >= 2] % n_items, minlength=n_items)
    recent_mask = history.day >= now_day - 28
    prev_mask = (history.day >= now_day - 112) & ~recent_mask
    recent = np.bincount(
        np.unique(history.cust[recent_mask] * n_items + history.item[recent_mask]) % n_items,
        minlength=n_items,
    ).astype(np.float64)
    prev = np.bincount(
        np.unique(history.cust[prev_mask] * n_items + history.item[prev_mask]) % n_items, minlength=n_items
    ).astype(np.float64)
    first = np.full(n_items, np.nan)
    last = np.full(n_items, np.nan)
    if len(history.item):
        order = np.argsort(history.day, kind="stable")
        first[history.item[order[::-1]]] = history.day[order[::-1]]
        last[history.item[order]] = history.day[order]
    return ItemStats(
        pop=np.log1p(pop),
        recent=recent,
        # Buyers in the last 4 weeks against the weekly rate of the 12 weeks before, smoothed.
        trend=(recent + 1.0) / (prev / 3.0 + 1.0),
        repeat=repeaters / np.maximum(pop, 1.0),
        age=now_day - first,
        days_sale=now_day - last,
    )


@dataclass(frozen=True)
class CollabModel:
    """Item neighbours (sparse, top ``m`` per item) and item factors, fitted on the train matrix only."""

    ease: sp.csr_matrix
    knn: sp.csr_matrix
    factors: F32  # items × dims, the collaborative vector of each item (rows L2-normalized)

    def save_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        out: dict[str, npt.NDArray[np.generic]] = {"factors": self.factors}
        for name, m in (("ease", self.ease), ("knn", self.knn)):
            out[f"{name}_data"] = m.data.astype(np.float32)
            out[f"{name}_indices"] = m.indices.astype(np.int32)
            out[f"{name}_indptr"] = m.indptr.astype(np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[np.generic]], n_items: int) -> CollabModel:
        mats = {
            name: sp.csr_matrix(
                (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                shape=(n_items, n_items),
            )
            for name in ("ease", "knn")
        }
        return cls(
            ease=mats["ease"], knn=mats["knn"], factors=np.asarray(arrays["factors"], dtype=np.float32)
        )


def _top_per_row_of(dense: F64, m: int, n: int) -> sp.csr_matrix:
    """The ``m`` largest positive entries of each row of ``dense``, a block of rows of an n×n matrix."""
    rows_n = dense.shape[0]
    m = min(m, n - 1) if n > 1 else 0
    if m <= 0:
        return sp.csr_matrix((rows_n, n), dtype=np.float32)
    cols = np.argpartition(-dense, m - 1, axis=1)[:, :m]
    vals = np.take_along_axis(dense, cols, 1)
    keep = vals > 0
    rows = np.repeat(np.arange(rows_n), m).reshape(rows_n, m)
    return sp.csr_matrix(
        (vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(rows_n, n), dtype=np.float32
    )


def spd_inverse(g: F64) -> F64:
    """The inverse of ``g``, a symmetric positive definite float64 matrix (EASE's G + lam·I), written over
    ``g`` and returned.

    Cholesky (LAPACK's potrf, then potri) does about half the arithmetic of the LU inverse
    ``np.linalg.inv``, and in place: ``np.linalg.inv`` holds two more n×n matrices at its peak (a working
    copy and the identity it solves for), 576 MB at 6,000 items. The same inverse to rounding.
    """
    from scipy.linalg import lapack

    n = g.shape[0]
    if g.shape != (n, n) or g.dtype != np.float64:
        raise ValueError(f"spd_inverse needs a square float64 matrix, got {g.dtype} {g.shape}")
    if not g.flags.c_contiguous:
        if not g.flags.f_contiguous:
            raise ValueError("spd_inverse needs a contiguous matrix, got a strided view")
        spd_inverse(g.T)  # symmetric: its C-ordered transpose is the same matrix
        return g
    # A symmetric C-ordered matrix is its own transpose, and the transpose is the Fortran-ordered view LAPACK
    # works on in place; its upper triangle is g's lower one.
    chol, info = lapack.dpotrf(g.T, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"the matrix is not positive definite (Cholesky failed at {info})")
    inv, info = lapack.dpotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the matrix is singular (potri failed at {info})")
    if not np.shares_memory(inv, g):  # LAPACK copied after all: what it returned is the answer
        g[...] = inv.T
    # Only g's lower triangle holds the inverse: mirror it, in row blocks so no n×n temporary is made.
    step = 512
    for i in range(0, n, step):
        e = min(i + step, n)
        d = g[i:e, i:e]
        d[...] = np.tril(d) + np.tril(d, -1).T
        g[i:e, e:] = g[e:, i:e].T
    return g


def _dense_ease(gram: sp.csr_matrix, keep: I64, lam: float, neighbours: int) -> sp.csr_matrix:
    """EASE on the items ``keep`` (B = I - P / diag(P), P = (G + lam·I)^-1), top ``neighbours`` a row."""
    n_items = gram.shape[0]
    if len(keep) < 2:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    g = gram[keep][:, keep].toarray()
    g[np.diag_indices_from(g)] += lam
    b = spd_inverse(g)
    # B = -P / diag(P) in place (the same values to the bit as a new matrix): one n² matrix less at the peak.
    b /= -np.diag(b).copy()
    np.fill_diagonal(b, 0.0)
    # Row blocks: the top-list's temporaries (a negated copy, its indices) stay small whatever n is.
    step = max(1, 4_000_000 // max(len(keep), 1))
    small = sp.vstack(
        [_top_per_row_of(b[i : i + step], neighbours, len(keep)) for i in range(0, len(keep), step)]
    ).tocoo()
    return sp.csr_matrix(
        (small.data, (keep[small.row], keep[small.col])), shape=(n_items, n_items), dtype=np.float32
    )


def _local_ease(gram: sp.csr_matrix, support: sp.csr_matrix, lam: float, neighbours: int) -> sp.csr_matrix:
    """EASE with each item's column fitted on the items of its row of ``support`` alone.

    EASE's column j is a ridge regression of item j's buyers on every other item,
    B[-j, j] = (G[-j, -j] + lam·I)^-1 G[-j, j]; here the predictors are j's support S, so the column costs
    one |S|×|S| solve: B[S, j] = (G[S, S] + lam·I)^-1 G[S, j]. With the whole catalog as support this is
    exact EASE. Items are solved in batches of equal support size, each G[S, S] read from the sparse gram
    (its upper triangle: the gram is symmetric, and its diagonal is the popularity).
    """
    n = gram.shape[0]
    gram = gram.tocsr()
    gram.sort_indices()
    diag = gram.diagonal()
    support = support.tocsr()
    support.sort_indices()
    sizes = np.diff(support.indptr)

    def entries(rows: I64, cols: I64) -> F64:
        if not len(rows):
            return np.zeros(0)
        return np.asarray(gram[rows, cols], dtype=np.float64).ravel()

    rows_out: list[I64] = []
    cols_out: list[I64] = []
    vals_out: list[F64] = []
    targets = np.flatnonzero(sizes > 0)
    targets = targets[np.argsort(sizes[targets], kind="stable")]
    start = 0
    while start < len(targets):
        # About 8M gram cells a batch (about 64 MB of systems), whatever the support size; sizes ascend, so
        # the batch's last item has the largest support.
        step = max(1, 8_000_000 // int(sizes[targets[start]]) ** 2)
        k = int(sizes[targets[min(start + step, len(targets)) - 1]])
        batch = targets[start : start + max(1, min(step, 8_000_000 // (k * k)))]
        start += len(batch)
        k = int(sizes[batch].max())
        offs = np.arange(k)
        valid = offs[None, :] < sizes[batch][:, None]
        pos = np.minimum(support.indptr[batch][:, None] + offs[None, :], len(support.indices) - 1)
        items = np.where(valid, support.indices[pos], 0).astype(np.int64)
        iu, ju = np.triu_indices(k, 1)
        pair = valid[:, iu] & valid[:, ju]
        upper = np.zeros(pair.shape)
        upper[pair] = entries(items[:, iu][pair], items[:, ju][pair])
        g = np.zeros((len(batch), k, k))
        g[:, iu, ju] = upper
        g += g.transpose(0, 2, 1)
        g[:, offs, offs] = np.where(valid, diag[items], 0.0) + lam
        rhs = np.zeros(valid.shape)
        rhs[valid] = entries(items[valid], np.broadcast_to(batch[:, None], items.shape)[valid])
        b = np.linalg.solve(g, rhs[:, :, None])[:, :, 0]
        rows_out.append(items[valid])
        cols_out.append(np.broadcast_to(batch[:, None], items.shape)[valid])
        vals_out.append(b[valid])
    if not rows_out:
        return sp.csr_matrix((n, n), dtype=np.float32)
    vals = np.concatenate(vals_out)
    # Only the items that raise another's score are kept, as in the dense fit's top lists.
    keep = vals > 0
    b_all = sp.csr_matrix(
        (vals[keep], (np.concatenate(rows_out)[keep], np.concatenate(cols_out)[keep])), shape=(n, n)
    )
    return _sparse_top(b_all, neighbours)


def fit_collab(
    history: History,
    n_items: int,
    *,
    neighbours: int = 100,
    dims: int = 48,
    ease_lambda: float = 600.0,
    ease_dense_items: int = 6000,
    ease_support: int = 64,
    seed: int = 0,
) -> CollabModel:
    """EASE (Steck, 2019) and cosine item-kNN as sparse top-``neighbours`` lists, and SVD item factors.

    A catalog of up to ``ease_dense_items`` items fits exact EASE, whose dense item×item inverse costs the
    cube of the catalog in time and its square in memory. A larger one fits exact EASE on its
    ``ease_dense_items`` most bought items (a dense inverse of a fixed size, whatever the catalog), and every
    column on its ``ease_support`` nearest items by cosine (``_local_ease``): the same regression with fewer
    predictors, so every item gets EASE neighbours and the cost past the threshold grows with the catalog,
    not its square. Between two of the most bought items only the exact fit's weight counts (the local one is
    dropped, whether or not the exact fit kept one). With ``ease_support=0`` the other items get no EASE
    neighbours (the method before local EASE, kept as the benchmarks' peer).

    Why the most bought items stay exact: local EASE on every column (as this was first) lost to exact EASE
    on the 4,000 to 8,000 most bought items on Ta-Feng's December window (new-item Recall@10 0.052 against
    0.059) and tied on January's; their columns need the whole basket as predictors, not 64 neighbours.
    The mix scored as exact EASE on both (0.059, 0.031) and kept the rest of the catalog reachable.
    """
    seen = sp.csr_matrix(
        (np.ones(len(history.cust)), (history.cust, history.item)), shape=(history.n_customers, n_items)
    )
    seen.data[:] = 1.0
    seen.sum_duplicates()
    seen.data[:] = 1.0
    pop = np.asarray(seen.sum(0)).ravel()
    gram = (seen.T @ seen).tocsr().astype(np.float64, copy=False)
    norms = np.sqrt(pop) + 1e-9
    # Scaled in place on a copy, row then column, as ``multiply`` by the two broadcast vectors did (the same
    # values to the bit, in the same order) without its two intermediate matrices: the gram is the fit's
    # largest sparse matrix (about 240 MB on Ta-Feng).
    cos = gram.copy()
    cos.data *= (1.0 / norms)[np.repeat(np.arange(n_items), np.diff(cos.indptr))]
    cos.data *= (1.0 / norms)[cos.indices]
    cos.setdiag(0.0)
    cos.eliminate_zeros()
    knn = _sparse_top(cos.tocsr(), neighbours)
    # The method follows the catalog, not the items bought so far: a label window's fit (on less history)
    # must give the trees the same kind of EASE scores as the final fit they are served with.
    # Most popular first, as the dense fit always ordered its items: the same order gives the same inverse to
    # the bit, so the figures of catalogs under the threshold stay exactly as they were.
    by_pop = np.argsort(-pop, kind="stable")
    if n_items <= ease_dense_items:
        ease = _dense_ease(gram, by_pop[pop[by_pop] > 0], ease_lambda, neighbours)
    else:
        top = by_pop[:ease_dense_items]
        top = top[pop[top] > 0]
        ease = _dense_ease(gram, top, ease_lambda, neighbours)
        if ease_support > 0:
            # Every column on its nearest items too; between two of the most bought items only the exact
            # weight counts. So the most bought columns are exact for the most bought predictors, and a rarer
            # item still points at the most bought items it sells with (their columns' local weights).
            local = _local_ease(gram, _sparse_top(cos, ease_support), ease_lambda, neighbours).tocoo()
            is_top = np.zeros(n_items, dtype=bool)
            is_top[top] = True
            both = is_top[local.row] & is_top[local.col]
            rest = sp.csr_matrix(
                (local.data[~both], (local.row[~both], local.col[~both])), shape=(n_items, n_items)
            )
            ease = _sparse_top((ease + rest).tocsr(), neighbours)
    factors = np.zeros((n_items, dims), dtype=np.float32)
    k = min(dims, min(seen.shape) - 1)
    if k >= 1 and seen.nnz:
        from scipy.sparse.linalg import svds

        # Idf-weighted columns keep the factors from being all about the bestsellers.
        idf = np.log((1.0 + seen.shape[0]) / (1.0 + pop))
        weighted = seen.multiply(idf[None, :]).tocsr()
        rng = np.random.default_rng(seed)
        v0 = rng.standard_normal(min(weighted.shape))
        _, s, vt = svds(weighted, k=k, v0=v0, random_state=seed)
        order = np.argsort(-s)
        vecs = (vt[order].T * np.sqrt(s[order])[None, :]).astype(np.float32)
        factors[:, :k] = vecs
    lengths = np.linalg.norm(factors, axis=1, keepdims=True)
    factors = factors / np.maximum(lengths, 1e-9)
    return CollabModel(ease=ease, knn=knn, factors=factors.astype(np.float32))


def _sparse_top(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(m.shape[0]):
        start, end = m.indptr[r], m.indptr[r + 1]
        if end == start:
            continue
        data = m.data[start:end]
        idx = m.indices[start:end]
        if len(data) > k:
            top = np.argpartition(-data, k - 1)[:k]
            data, idx = data[top], idx[top]
        rows.append(np.full(len(idx), r))
        cols.append(idx)
        vals.append(data)
    if not rows:
        return sp.csr_matrix(m.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=m.shape,
        dtype=np.float32,
    )


def _rows_dot(weights: sp.csr_matrix, dense: F32) -> F64:
    """``weights @ dense`` in float64, casting only the rows of ``dense`` that ``weights`` uses.

    scipy casts all of ``dense`` (every item's vector) to float64 on each call, which for one customer's few
    items is nearly all of the work. Each output row still sums the same products in the same order, so the
    result is the same to the bit.
    """
    cols, local = np.unique(weights.indices, return_inverse=True)
    small = sp.csr_matrix((weights.data, local, weights.indptr), shape=(weights.shape[0], len(cols)))
    return np.asarray(small @ dense[cols], dtype=np.float64)


_TRANSPOSED: dict[int, F64] = {}


def _t64(m: F32) -> F64:
    """``m.T`` as a C-ordered float64 array, made once for as long as ``m`` lives.

    ``f64 @ m.T`` with a float32 ``m`` makes exactly this copy on every call (an n_items-wide cast, most of a
    one-customer request), then runs the same BLAS product on it: kept, the result is the same to the bit.
    ``m`` must not change in place (fitted matrices never do).
    """
    key = id(m)
    out = _TRANSPOSED.get(key)
    if out is None:
        out = np.ascontiguousarray(m.T, dtype=np.float64)
        _TRANSPOSED[key] = out
        # Dropped when ``m`` is freed, before its id can name another array.
        weakref.finalize(m, _TRANSPOSED.pop, key, None)
    return out


@dataclass(frozen=True)
class CandidateLimits:
    """How many candidates each source may add per customer (0 turns a source off).

    ``repeat`` caps the customer's own past items at the ones bought most of late (0: every past item).
    """

    collab: int = 100
    text: int = 30
    trend: int = 30
    repeat: int = 0
    popular: int = 0

    def __post_init__(self) -> None:
        for name in ("collab", "text", "trend", "repeat", "popular"):
            value = getattr(self, name)
            if value < 0:
                # Named as the Ranker's parameter too, since that is where a user sets it.
                what = "every past item" if name == "repeat" else "the source is off"
                raise DataError(f"n_{name} must be >= 0 (0: {what}), got {value}: the {name} candidate limit")


@dataclass(frozen=True)
class Candidates:
    """Rows to score: which customer (position in the request), which item column, the feature matrix."""

    row: I64
    item: I64
    x: F32
    source: npt.NDArray[np.int8]  # bit flags: 1 repeat, 2 collaborative, 4 text, 8 trending, 16 popular

    def __len__(self) -> int:
        return len(self.row)


def _pair_stats(history: History, rows: I64, n_items: int, now_day: float) -> tuple[dict[str, F64], I64, F64]:
    """Per (request row, item) purchase statistics for the requested customers."""
    lookup = np.full(max(history.n_customers, 1), -1, dtype=np.int64)
    lookup[rows] = np.arange(len(rows))
    mask = lookup[history.cust] >= 0
    cust = lookup[history.cust[mask]]
    item, day, order = history.item[mask], history.day[mask], history.order[mask]
    key = cust * n_items + item
    # One purchase per (customer, item, order): repeated lines in one basket are not repeat purchases.
    trip, first_idx = np.unique(np.stack([key, order]), axis=1, return_index=True)
    tkey, tday = trip[0], day[first_idx]
    qty_key, qty_counts = np.unique(key, return_counts=True)
    pkeys, inv, orders = np.unique(tkey, return_inverse=True, return_counts=True)
    last = np.full(len(pkeys), -np.inf)
    first = np.full(len(pkeys), np.inf)
    np.maximum.at(last, inv, tday)
    np.minimum.at(first, inv, tday)
    age = np.maximum(now_day - tday, 0.0)
    d30 = np.bincount(inv, weights=np.exp(-age / 30.0), minlength=len(pkeys))
    d120 = np.bincount(inv, weights=np.exp(-age / 120.0), minlength=len(pkeys))
    qty = np.zeros(len(pkeys))
    qty[np.searchsorted(pkeys, qty_key)] = qty_counts
    stats = {
        "orders": orders.astype(np.float64),
        "qty": qty,
        "last": last,
        "first": first,
        "d30": d30,
        "d120": d120,
    }
    # Customer level: distinct orders, first/last order day, distinct items.
    ck = np.unique(np.stack([cust, order]), axis=1)
    corders = np.bincount(ck[0], minlength=len(rows)).astype(np.float64)
    cust_last = np.full(len(rows), np.nan)
    cust_first = np.full(len(rows), np.nan)
    if len(cust):
        srt = np.argsort(day, kind="stable")
        cust_last[cust[srt]] = day[srt]
        cust_first[cust[srt[::-1]]] = day[srt[::-1]]
    cdistinct = np.bincount((pkeys // n_items).astype(np.int64), minlength=len(rows)).astype(np.float64)
    cust_cols = np.stack(
        [
            corders,
            now_day - cust_last,
            cdistinct,
            now_day - cust_first,
            (cust_last - cust_first) / np.maximum(corders - 1.0, 1.0),
        ],
        axis=1,
    )
    return stats, pkeys, cust_cols


def _top_columns(score: F64, blocked: npt.NDArray[np.bool_], n: int) -> tuple[I64, I64]:
    """(row, column) of each row's ``n`` best unblocked scores (fewer where fewer are unblocked).

    One top-k over the whole block (torch's, several times faster than numpy's per-row argpartition over a
    catalog of tens of thousands, which was most of a large store's fit); ties go either way.
    """
    import torch

    masked = np.where(blocked, -np.inf, score)
    k = min(n, masked.shape[1])
    _, top = torch.topk(torch.from_numpy(np.ascontiguousarray(masked)), k, dim=1, sorted=False)
    cols = top.numpy().astype(np.int64)
    rows = np.repeat(np.arange(masked.shape[0], dtype=np.int64), k)
    cols = cols.ravel()
    keep = np.isfinite(masked[rows, cols])
    return rows[keep], cols[keep]


def build_candidates(
    history: History,
    rows: Sequence[int] | npt.NDArray[np.integer],
    *,
    now_day: float,
    n_items: int,
    items: ItemStats,
    collab: CollabModel,
    text: F32 | None,
    new_only: bool = False,
    allowed: npt.NDArray[np.bool_] | None = None,
    limits: CandidateLimits = CandidateLimits(),
) -> Candidates:
    """Candidates and features for the customers at ``rows`` (indices into the history's customers).

    Candidates (per ``limits``): the items the customer bought (unless ``new_only``; with ``limits.repeat``
    > 0 only that many, the ones bought most of late by orders decayed over 120 days), the top
    ``limits.collab`` items by EASE, the top ``limits.text`` by text similarity to their taste, and the
    ``limits.trend`` most trending and the ``limits.popular`` most bought items (the store's staples: on a
    grocery store the new items a customer buys next are most often its best sellers, which neither her
    neighbours nor the trend may hold).
    ``history`` must already end before ``now_day``: the caller owns the cut, so nothing leaks.
    """
    req = np.asarray(rows, dtype=np.int64)
    if len(history.day) and float(history.day.max()) >= now_day:
        raise DataError("the history reaches past 'now': features would leak the future")
    st, pkeys, cust_cols = _pair_stats(history, req, n_items, now_day)
    nreq = len(req)
    p_row, p_item = pkeys // n_items, pkeys % n_items
    seen = sp.csr_matrix((np.ones(len(pkeys)), (p_row, p_item)), shape=(nreq, n_items))
    recent_w = sp.csr_matrix((st["d120"], (p_row, p_item)), shape=(nreq, n_items))
    ease = np.asarray((seen @ collab.ease).todense())
    ease_recent = np.asarray((recent_w @ collab.ease).todense())
    knn = np.asarray((seen @ collab.knn).todense())
    user_f = _rows_dot(recent_w, collab.factors)
    user_f = user_f / np.maximum(np.linalg.norm(user_f, axis=1, keepdims=True), 1e-9)
    svd = user_f @ _t64(collab.factors)
    if text is not None:
        prof = _rows_dot(recent_w, text)
        prof = prof / np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-9)
        tsim = prof @ _t64(text)
    else:
        tsim = None  # no text: the source steps aside rather than add items by a similarity of zero
    blocked = np.zeros((nreq, n_items), dtype=bool)
    if allowed is not None:
        blocked[:, ~allowed] = True
    if new_only:
        blocked[p_row, p_item] = True
    mine = np.arange(0 if new_only else len(pkeys))
    if len(mine):
        if allowed is not None:
            mine = mine[allowed[p_item[mine]]]
        if limits.repeat > 0:
            # Years of history make hundreds of past items, each one scored by every tree; the ones bought
            # neither often nor lately rarely reach a top 10 (ties keep the item order).
            order = np.lexsort((mine, -st["d120"][mine], p_row[mine]))
            mine = mine[order]
            starts = np.searchsorted(p_row[mine], p_row[mine], side="left")
            mine = mine[np.arange(len(mine)) - starts < limits.repeat]
    parts: list[tuple[I64, I64, int]] = [(p_row[mine], p_item[mine], 1)]
    trend_score = np.broadcast_to(items.trend * np.log1p(items.recent), (nreq, n_items))
    pop_score = np.broadcast_to(items.pop, (nreq, n_items))
    sources = (
        (ease, limits.collab, 2),
        (tsim, limits.text, 4),
        (trend_score, limits.trend, 8),
        (pop_score, limits.popular, 16),
    )
    for score, n, bit in sources:
        if score is not None and n > 0 and nreq:
            parts.append((*_top_columns(score, blocked, n), bit))
    keys = np.concatenate([r * n_items + c for r, c, _ in parts])
    bits = np.concatenate([np.full(len(r), b, np.int8) for r, _, b in parts])
    # One row per (customer, item), its sources OR-ed together; customers in request order, items by column.
    uniq, inv = np.unique(keys, return_inverse=True)
    source = np.zeros(len(uniq), dtype=np.int8)
    np.bitwise_or.at(source, inv, bits)
    row, item = uniq // n_items, uniq % n_items
    x = np.full((len(row), len(FEATURES)), np.nan, dtype=np.float64)
    pos = np.searchsorted(pkeys, row * n_items + item)
    pos = np.minimum(pos, max(len(pkeys) - 1, 0))
    hit = (pkeys[pos] == row * n_items + item) if len(pkeys) else np.zeros(len(row), bool)
    orders = np.where(hit, st["orders"][pos] if len(pkeys) else 0.0, 0.0)
    x[:, _F["bought"]] = hit
    x[:, _F["orders"]] = orders
    if len(pkeys):
        x[:, _F["qty_log"]] = np.where(hit, np.log1p(st["qty"][pos]), 0.0)
        x[:, _F["days_last"]] = np.where(hit, now_day - st["last"][pos], np.nan)
        x[:, _F["days_first"]] = np.where(hit, now_day - st["first"][pos], np.nan)
        x[:, _F["decay30"]] = np.where(hit, st["d30"][pos], 0.0)
        x[:, _F["decay120"]] = np.where(hit, st["d120"][pos], 0.0)
        gap = (st["last"][pos] - st["first"][pos]) / np.maximum(orders - 1.0, 1.0)
        x[:, _F["gap"]] = np.where(hit & (orders >= 2), gap, np.nan)
        x[:, _F["due"]] = np.where(
            hit & (orders >= 2), (now_day - st["last"][pos]) / np.maximum(gap, 1.0), np.nan
        )
    x[:, _F["share"]] = orders / np.maximum(cust_cols[row, 0], 1.0)
    for j, name in enumerate(("c_orders", "c_days_last", "c_distinct", "c_tenure", "c_gap")):
        x[:, _F[name]] = cust_cols[row, j]
    item_cols = items.matrix()
    for j, name in enumerate(("i_pop_log", "i_recent", "i_trend", "i_repeat", "i_age", "i_days_sale")):
        x[:, _F[name]] = item_cols[j][item]
    x[:, _F["s_ease"]] = ease[row, item]
    row_max = np.maximum(ease.max(axis=1), 1e-9)
    x[:, _F["s_ease_norm"]] = ease[row, item] / row_max[row]
    x[:, _F["s_ease_recent"]] = ease_recent[row, item]
    x[:, _F["s_knn"]] = knn[row, item]
    x[:, _F["s_svd"]] = svd[row, item]
    x[:, _F["s_text"]] = tsim[row, item] if tsim is not None else 0.0
    # Scores relative to the customer's best candidate: the trees compare within a customer, not across.
    for name, base in (
        ("orders_rel", "orders"),
        ("decay_rel", "decay30"),
        ("knn_rel", "s_knn"),
        ("text_rel", "s_text"),
    ):
        col = np.nan_to_num(x[:, _F[base]], nan=0.0)
        best = np.zeros(nreq)
        np.maximum.at(best, row, col)
        x[:, _F[name]] = col / np.maximum(best[row], 1e-9)
    return Candidates(row=row, item=item, x=x.astype(np.float32), source=source)
