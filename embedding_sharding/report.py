"""Plan reports: one dict (the JSON report) built from a PlanResult, rendered as text or Markdown.

The dict, per table: sharding type, compute kernel, ranks, shards (rank, offsets, sizes, bytes, estimated ms);
per rank: HBM / DDR capacity, reserved, used (= the sum of its shards), free; estimated forward / backward time
(TorchRec's perf model: compute + comms, ms per step) and communication volume; imbalance (max / mean over
ranks); totals. Times are TorchRec's estimates; communication volume is this module's estimate of the bytes a
rank sends per step:

  sharded table, forward:  its shards' pooled outputs (fp32) for the other ranks' samples, plus the ids (int64)
                           of its own samples that live on other ranks;
  sharded table, backward: the output gradients (fp32) of its own samples for shards on other ranks;
  data_parallel table:     the ring all-reduce of its gradient, 2 (W-1)/W x rows x dim x 4 bytes.

HTML is in `embedding_sharding.html_report`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Dict, List

from embedding_sharding.planner import PlanResult
from embedding_sharding.topology import GIB, describe

FP32, INT64 = 4, 8


def _pooling(result: PlanResult, name: str) -> float:
    pc = result.constraints.get(name)
    pf = pc.pooling_factors if pc is not None and pc.pooling_factors else [1.0]
    return float(sum(pf))


def _sent_for_own_samples(sharding_type: str, shards: List[Any], rank: int, dim: int) -> tuple:
    """(id copies, output-gradient floats) per own sample that rank sends to the other owners of a table.

    Column-split shards each need all ids and get their own columns' gradients; row-split shards get the ids
    of their rows (a share 1/n each) and the full-width gradient; a whole table: everything to its one owner."""
    remote = [s for s in shards if int(s.rank) != rank]
    if not remote:
        return 0.0, 0.0
    if sharding_type in ("row_wise", "table_row_wise", "grid_shard"):
        return len(remote) / len(shards), float(dim * len({int(s.rank) for s in remote}))
    return float(len({int(s.rank) for s in remote})), float(sum(s.size[1] for s in remote))


def build_report(result: PlanResult, title: str = "") -> Dict[str, Any]:
    topo = result.topology
    ws = topo.world_size
    b_local = result.batch_size
    b_global = b_local * ws
    other = (ws - 1) / ws  # share of the global batch that belongs to other ranks
    ranks = [{"rank": r, "hbm_capacity": topo.devices[r].storage.hbm, "ddr_capacity": topo.devices[r].storage.ddr,
              "hbm_reserved": topo.devices[r].storage.hbm - result.reserved_topology.devices[r].storage.hbm,
              "ddr_reserved": topo.devices[r].storage.ddr - result.reserved_topology.devices[r].storage.ddr,
              "hbm_used": 0, "ddr_used": 0, "fwd_compute_ms": 0.0, "fwd_comms_ms": 0.0, "bwd_compute_ms": 0.0,
              "bwd_comms_ms": 0.0, "fwd_comm_bytes": 0.0, "bwd_comm_bytes": 0.0, "shards": 0,
              "bytes_by_sharding_type": defaultdict(int)} for r in range(ws)]
    tables: List[Dict[str, Any]] = []
    for so in sorted(result.options, key=lambda o: o.name):
        rows, dim = int(so.tensor.shape[0]), int(so.tensor.shape[1])
        pf = _pooling(result, so.name)
        shards = []
        for s in so.shards:
            st, pe = s.storage, s.perf
            rank = int(s.rank)
            d = {"rank": rank, "offsets": [int(x) for x in s.offset], "sizes": [int(x) for x in s.size],
                 "hbm_bytes": int(st.hbm) if st else 0, "ddr_bytes": int(st.ddr) if st else 0,
                 "fwd_ms": (pe.fwd_compute + pe.fwd_comms) if pe else 0.0,
                 "bwd_ms": (pe.bwd_compute + pe.bwd_comms) if pe else 0.0}
            shards.append(d)
            rr = ranks[rank]
            rr["hbm_used"] += d["hbm_bytes"]
            rr["ddr_used"] += d["ddr_bytes"]
            rr["bytes_by_sharding_type"][so.sharding_type] += d["hbm_bytes"] + d["ddr_bytes"]
            rr["shards"] += 1
            if pe:
                rr["fwd_compute_ms"] += pe.fwd_compute
                rr["fwd_comms_ms"] += pe.fwd_comms
                rr["bwd_compute_ms"] += pe.bwd_compute
                rr["bwd_comms_ms"] += pe.bwd_comms
            if so.sharding_type == "data_parallel":
                rr["bwd_comm_bytes"] += 2 * other * rows * dim * FP32
            else:
                rr["fwd_comm_bytes"] += b_global * other * s.size[1] * FP32
        if so.sharding_type != "data_parallel":
            for r, rr in enumerate(ranks):  # every rank sends its samples' ids and output gradients to the owners
                ids, grads = _sent_for_own_samples(so.sharding_type, so.shards, r, dim)
                rr["fwd_comm_bytes"] += b_local * pf * INT64 * ids
                rr["bwd_comm_bytes"] += b_local * FP32 * grads
        tables.append({"name": so.name, "module": so.path, "rows": rows, "dim": dim, "pooling_factor": pf,
                       "sharding_type": so.sharding_type, "compute_kernel": so.compute_kernel,
                       "ranks": sorted({d["rank"] for d in shards}), "shards": shards,
                       "hbm_bytes": sum(d["hbm_bytes"] for d in shards),
                       "ddr_bytes": sum(d["ddr_bytes"] for d in shards),
                       "param_bytes": rows * dim * FP32})
    for rr in ranks:
        rr["bytes_by_sharding_type"] = dict(rr["bytes_by_sharding_type"])
        rr["hbm_free"] = rr["hbm_capacity"] - rr["hbm_reserved"] - rr["hbm_used"]
        rr["ddr_free"] = rr["ddr_capacity"] - rr["ddr_reserved"] - rr["ddr_used"]
        rr["fwd_ms"] = rr["fwd_compute_ms"] + rr["fwd_comms_ms"]
        rr["bwd_ms"] = rr["bwd_compute_ms"] + rr["bwd_comms_ms"]
        rr["total_ms"] = rr["fwd_ms"] + rr["bwd_ms"]

    def imbalance(key: str) -> float:
        vals = [r[key] for r in ranks]
        mean = sum(vals) / len(vals)
        return max(vals) / mean if mean > 0 else 1.0

    mem_key = "hbm_used" if topo.compute_device == "cuda" else "ddr_used"
    totals = {
        "tables": len(tables), "rows": sum(t["rows"] for t in tables), "shards": sum(len(t["shards"]) for t in tables),
        "param_bytes": sum(t["param_bytes"] for t in tables),
        "hbm_used": sum(r["hbm_used"] for r in ranks), "ddr_used": sum(r["ddr_used"] for r in ranks),
        "hbm_capacity": sum(r["hbm_capacity"] for r in ranks), "ddr_capacity": sum(r["ddr_capacity"] for r in ranks),
        "tables_by_sharding_type": dict(Counter(t["sharding_type"] for t in tables)),
        "tables_by_compute_kernel": dict(Counter(t["compute_kernel"] for t in tables)),
        "max_rank_total_ms": max(r["total_ms"] for r in ranks),
        "comm_bytes_per_step": sum(r["fwd_comm_bytes"] + r["bwd_comm_bytes"] for r in ranks),
    }
    return {
        "title": title,
        "topology": {**describe(topo), "storage_reservation": result.storage_reservation,
                     "batch_size_per_rank": b_local, "global_batch_size": b_global},
        "planner_seconds": result.seconds,
        "search": result.search.to_dict() if result.search is not None else None,
        "tables": tables,
        "ranks": ranks,
        "imbalance": {"total_ms": imbalance("total_ms"), "memory": imbalance(mem_key),
                      "fwd_comm_bytes": imbalance("fwd_comm_bytes")},
        "totals": totals,
        "torchrec_stats": result.stats_text,
    }


# -- text / markdown -----------------------------------------------------------------------------------------
def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def _rows(report: Dict[str, Any]) -> List[List[str]]:
    out = []
    for r in report["ranks"]:
        out.append([str(r["rank"]), gib(r["hbm_used"]), gib(r["hbm_free"]), gib(r["ddr_used"]), gib(r["ddr_free"]),
                    f"{r['fwd_ms']:.3f}", f"{r['bwd_ms']:.3f}",
                    f"{(r['fwd_comm_bytes'] + r['bwd_comm_bytes']) / 2**20:.1f}", str(r["shards"])])
    return out


RANK_HEAD = ["rank", "HBM used GiB", "HBM free GiB", "DDR used GiB", "DDR free GiB", "fwd ms", "bwd ms",
             "comm MiB/step", "shards"]
TABLE_HEAD = ["table", "rows", "dim", "sharding type", "kernel", "ranks", "GiB"]


def _table_rows(report: Dict[str, Any]) -> List[List[str]]:
    out = []
    for t in report["tables"]:
        ranks = t["ranks"]
        shown = ",".join(map(str, ranks)) if len(ranks) <= 6 else f"{ranks[0]}..{ranks[-1]} ({len(ranks)})"
        out.append([t["name"], f"{t['rows']:,}", str(t["dim"]), t["sharding_type"], t["compute_kernel"], shown,
                    gib(t["hbm_bytes"] + t["ddr_bytes"])])
    return out


def _summary_lines(report: Dict[str, Any]) -> List[str]:
    tp, tot, imb = report["topology"], report["totals"], report["imbalance"]
    return [
        f"topology: {tp['world_size']} x {tp['device']} ({tp['nodes']} node(s) of {tp['local_world_size']}), "
        f"HBM {tp['hbm_gib_per_rank']:.1f} GiB, DDR {tp['ddr_gib_per_rank']:.1f} GiB per rank, "
        f"intra {tp['intra_bw_gbps']:.0f} GB/s, inter {tp['inter_bw_gbps']:.1f} GB/s, "
        f"reservation {tp['storage_reservation']:.0%}, batch {tp['batch_size_per_rank']} per rank",
        f"tables: {tot['tables']} ({tot['rows']:,} rows, {gib(tot['param_bytes'])} GiB of fp32 weights) in "
        f"{tot['shards']} shards; by type: " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(tot["tables_by_sharding_type"].items())),
        f"memory used: HBM {gib(tot['hbm_used'])} of {gib(tot['hbm_capacity'])} GiB, "
        f"DDR {gib(tot['ddr_used'])} of {gib(tot['ddr_capacity'])} GiB (weights + optimizer state)",
        f"slowest rank: {tot['max_rank_total_ms']:.3f} ms/step (estimated fwd+bwd); imbalance (max/mean): "
        f"time {imb['total_ms']:.2f}, memory {imb['memory']:.2f}; "
        f"communication {tot['comm_bytes_per_step'] / 2**20:.1f} MiB/step in total",
        f"planned in {report['planner_seconds']:.2f} s"
        + (f"; search: {report['search']['summary']}" if report.get("search") else ""),
    ]


def _fixed(head: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def render_text(report: Dict[str, Any], stats: bool = True) -> str:
    lines = [f"== sharding plan{': ' + report['title'] if report['title'] else ''} =="] + _summary_lines(report)
    lines += ["", "per rank:"] + _fixed(RANK_HEAD, _rows(report))
    lines += ["", "per table:"] + _fixed(TABLE_HEAD, _table_rows(report))
    if stats and report["torchrec_stats"]:
        lines += ["", "TorchRec planner statistics:", report["torchrec_stats"].rstrip()]
    return "\n".join(lines) + "\n"


def _md_table(head: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows]


def render_markdown(report: Dict[str, Any]) -> str:
    lines = [f"# Sharding plan{': ' + report['title'] if report['title'] else ''}", ""]
    lines += [f"- {s}" for s in _summary_lines(report)]
    lines += ["", "## Per rank", ""] + _md_table(RANK_HEAD, _rows(report))
    lines += ["", "## Per table", ""] + _md_table(TABLE_HEAD, _table_rows(report))
    if report["torchrec_stats"]:
        lines += ["", "## TorchRec planner statistics", "", "```", report["torchrec_stats"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def render_compare_text(a: Dict[str, Any], b: Dict[str, Any]) -> str:
    """Two plans side by side: the headline numbers of each."""
    def facts(r: Dict[str, Any]) -> List[List[str]]:
        tp, tot, imb = r["topology"], r["totals"], r["imbalance"]
        used = max(x["hbm_used"] if tp["device"] == "cuda" else x["ddr_used"] for x in r["ranks"])
        return [["ranks", f"{tp['world_size']} ({tp['nodes']} x {tp['local_world_size']})"],
                ["device", tp["device"]], ["HBM / rank GiB", f"{tp['hbm_gib_per_rank']:.1f}"],
                ["DDR / rank GiB", f"{tp['ddr_gib_per_rank']:.1f}"],
                ["max memory used / rank GiB", gib(used)],
                ["slowest rank ms/step", f"{tot['max_rank_total_ms']:.3f}"],
                ["time imbalance", f"{imb['total_ms']:.2f}"], ["memory imbalance", f"{imb['memory']:.2f}"],
                ["comm MiB/step", f"{tot['comm_bytes_per_step'] / 2**20:.1f}"],
                ["tables by type", ", ".join(f"{k} {v}" for k, v in sorted(tot["tables_by_sharding_type"].items()))],
                ["tables by kernel", ", ".join(f"{k} {v}" for k, v in sorted(tot["tables_by_compute_kernel"].items()))]]
    fa, fb = facts(a), facts(b)
    rows = [[x[0], x[1], y[1]] for x, y in zip(fa, fb)]
    return "\n".join(_fixed(["", a["title"] or "A", b["title"] or "B"], rows)) + "\n"
