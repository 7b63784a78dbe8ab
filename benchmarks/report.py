# ruff: noqa: RUF001, RUF003  (the tables use × and en dashes)
"""Tables, pages and the plot of benchmarks/run.py, from the per-round results.

Every number is the median of the rounds with the min-max spread after it;
a ratio is computed in each round (its two cells ran in the same round) and
reported the same way, so one slow round of a peer cannot make a lead.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

PEERS = ["floor", "shmshare", "Manager", "UltraDict", "shared-memory-dict", "redis"]
PEER_NAMES = {
    "floor": "local dict of pickles (floor)", "shmshare": "shmshare.SharedDict",
    "Manager": "multiprocessing.Manager().dict()", "UltraDict": "UltraDict (shared_lock=True)",
    "shared-memory-dict": "shared-memory-dict", "redis": "redis-py + local redis-server",
}


@dataclass
class Target:
    path: str
    cell: str
    ref: str | None  # a cell: the target is a ratio to it; None: an absolute limit
    limit: float
    unit: str = "ns"
    minus: str | None = None  # cell subtracted per round (an added cost)


# (path, cell, its floor's or peer's cell, what that is): benchmarks.md's other objects.
_PICKLES = "the same on local pickles"
OTHERS = [
    ("`d.apply(k, f)`, an atomic read-modify-write", "shmshare | apply", "floor | apply",
     "a `threading.Lock` around a local dict of pickles"),
    ("`len(d)`", "shmshare | len", "floor | len", "`len()` of a local dict"),
    ("`d.pop(k)` then `d[k] = v`, int keys", "shmshare | pop + set", "floor | pop + set",
     _PICKLES),
    ("`list(d.items())` of 1,000 int keys, per item", "shmshare | items, per item",
     "floor | items, per item", _PICKLES),
    ("`SharedValue` `.value`", "shmshare | SharedValue .value",
     "multiprocessing.Value | .value", "`multiprocessing.Value`"),
    ("`SharedValue` `.value = v`", "shmshare | SharedValue .value = v",
     "multiprocessing.Value | .value = v", "`multiprocessing.Value`"),
    ("`with v.get_lock(): v.value += 1`", "shmshare | SharedValue locked +=",
     "multiprocessing.Value | locked +=", "`multiprocessing.Value`"),
    ("`SharedList` `lst[i] = v`", "shmshare | SharedList lst[i] = v",
     "floor | list lst[i] = v", _PICKLES),
    ("`SharedSet` `s.add(x)`", "shmshare | SharedSet add", "floor | set add", _PICKLES),
    ("`SharedNamespace` `ns.x`", "shmshare | SharedNamespace ns.x", "floor | get", _PICKLES),
    ("`SharedNamespace` `ns.x = v`", "shmshare | SharedNamespace ns.x = v", "floor | set",
     _PICKLES),
    ("`SharedSemaphore` acquire + release", "shmshare | SharedSemaphore acquire + release",
     "multiprocessing.Semaphore | acquire + release", "`multiprocessing.Semaphore`"),
]

TARGETS = [
    Target("`SharedDict` set, small value", "shmshare | set", "floor | set", 2.0),
    Target("cached get (a cache hit)", "shmshare | get", "floor | get", 1.5),
    Target("get of an unchanged key while another process writes other keys at 10k/s",
           "shmshare | get while another process writes other keys", "floor | get", 1.5),
    Target("`SharedDict` set, int key", "shmshare | set, int key", "floor | set, int key", 2.0),
    Target("cached get, int key", "shmshare | get, int key", "floor | get, int key", 1.5),
    Target("`SharedDict` set, tuple key", "shmshare | set, tuple key", "floor | set, tuple key",
           2.0),
    Target("cached get, tuple key", "shmshare | get, tuple key", "floor | get, tuple key", 1.5),
    Target("get right after that key changed", "shmshare | get after that key changed",
           "floor | get after that key changed", 2.5),
    Target("get of a 10 MiB value", "shmshare | 10 MiB get (µs)", "floor | 10 MiB loads (µs)",
           1.3, "µs"),
    Target("set of a 10 MiB value", "shmshare | 10 MiB set (µs)",
           "floor | 10 MiB dumps + memcpy (µs)", 1.3, "µs"),
    Target("get of a 10 MiB numpy array", "shmshare | 10 MiB numpy array get (µs)",
           "floor | 10 MiB numpy array loads (µs)", 1.3, "µs"),
    Target("set of a 10 MiB numpy array", "shmshare | 10 MiB numpy array set (µs)",
           "floor | 10 MiB numpy array dumps + memcpy (µs)", 1.3, "µs"),
    Target("`SharedList` `lst[i]` of a 10 MiB bytes item",
           "shmshare | 10 MiB SharedList lst[i] (µs)", "floor | 10 MiB loads (µs)", 1.3, "µs"),
    Target("`SharedList` `lst[i] = v` of a 10 MiB bytes item",
           "shmshare | 10 MiB SharedList lst[i] = v (µs)", "floor | 10 MiB dumps + memcpy (µs)",
           1.3, "µs"),
    Target("`SharedQueue` put + get of a 10 MiB numpy array",
           "shmshare | 10 MiB numpy array queue put + get (µs)",
           "floor | 10 MiB numpy array dumps + loads (µs)", 1.3, "µs"),
    Target("`SharedArray` `a[i]`", "shmshare | SharedArray a[i]", None, 200.0),
    Target("`SharedArray` `a[i] = v`", "shmshare | SharedArray a[i] = v", None, 200.0),
    Target("`Manager().Array` `a[i]`", "shmshare | Manager().Array a[i]", None, 200.0),
    Target("`Manager().Array` `a[i] = v`", "shmshare | Manager().Array a[i] = v", None, 200.0),
    Target("create + destroy a named SharedDict, default project dir",
           "shmshare | create + destroy, default project dir (µs)",
           "UltraDict | create + destroy (µs)", 1.2, "µs"),
    Target("create + destroy a named SharedDict, tmpfs project dir",
           "shmshare | create + destroy, tmpfs project dir (µs)",
           "UltraDict | create + destroy (µs)", 1.2, "µs"),
    Target("create + destroy a named SharedDict, project dir under /tmp (its file system: "
           "see the machine table)",
           "shmshare | create + destroy, project dir under /tmp (µs)",
           "UltraDict | create + destroy (µs)", 1.2, "µs"),
    Target("attach by name from another process, first time",
           "shmshare | attach by name, first time, another process (µs)",
           "shared_memory | attach by name, first time, another process (µs)", 2.0, "µs"),
    Target("`Pool(2)` summing 8 slices of a 256 MiB array passed by reference",
           "shmshare | Pool(2) sums 8 slices of 256 MiB (ms)",
           "shared_memory | Pool(2) sums 8 slices of 256 MiB (ms)", 1.2, "ms"),
    Target("`import shmshare`", "shmshare | import (ms)", None, 50.0, "ms"),
    Target("`from shmshare import SharedDict` (the names load on first use)",
           "shmshare | from shmshare import SharedDict (ms)", None, 50.0, "ms"),
    Target("pytest start in an unrelated project: what importing shmshare costs it",
           "pytest --co, imports of shmshare (ms)", None, 20.0, "ms"),
    Target("pytest start in an unrelated project: CPU time the plugin adds",
           "pytest --co, shmshare plugin loaded (CPU ms)", None, 20.0, "ms",
           minus="pytest --co, -p no:shmshare (CPU ms)"),
]
NOT_MEASURED: list[tuple[str, str]] = []


def num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.2f}"


def spread(xs: list[float]) -> str:
    return f"{num(statistics.median(xs))} ({num(min(xs))}–{num(max(xs))})"


def ratio_spread(xs: list[float], suffix: str = "×") -> str:
    return (f"{statistics.median(xs):,.2f}{suffix} ({min(xs):,.2f}–{max(xs):,.2f})")


class Report:
    def __init__(self, results: dict[str, list[float]], errors: dict[str, str],
                 missing: dict[str, str], machine: dict[str, str], versions: dict[str, str],
                 command: str, elapsed: float, rounds: int, quick: bool) -> None:
        self.r = {k: v for k, v in results.items() if v and k not in errors}
        self.errors, self.missing, self.machine = errors, missing, machine
        self.versions, self.command, self.elapsed = versions, command, elapsed
        self.rounds, self.quick = rounds, quick

    def per_round(self, a: str, b: str) -> list[float] | None:
        """a / b in each round where both ran."""
        if a not in self.r or b not in self.r or len(self.r[a]) != len(self.r[b]):
            return None
        return [x / y for x, y in zip(self.r[a], self.r[b], strict=True) if y]

    # -- the targets of issue 15 ------------------------------------------------------
    def targets_md(self) -> str:
        lines = [f"| path | shmshare, median (min–max) of {self.rounds} rounds | floor / peer "
                 "| ratio, per round: median (min–max) | target | met? |",
                 "|---|---:|---:|---:|---:|---|"]
        for t in TARGETS:
            u = f" {t.unit}"
            if t.cell not in self.r or (t.ref and t.ref not in self.r) or (
                    t.minus and t.minus not in self.r):
                why = self.errors.get(t.cell) or self.errors.get(t.ref or "") or "not measured"
                lines.append(f"| {t.path} | — | — | — | — | {why} |")
                continue
            ours = self.r[t.cell]
            if t.minus:
                added = [a - b for a, b in zip(ours, self.r[t.minus], strict=True)]
                lines.append(f"| {t.path} | {spread(ours)}{u} | without: "
                             f"{spread(self.r[t.minus])}{u} | adds {spread(added)}{u} "
                             f"| ≤ {num(t.limit)}{u} added | "
                             f"{_verdict(statistics.median(added) <= t.limit)} |")
            elif t.ref is None:
                lines.append(f"| {t.path} | {spread(ours)}{u} | — | — | ≤ {num(t.limit)}{u} "
                             f"| {_verdict(statistics.median(ours) <= t.limit)} |")
            else:
                ratios = self.per_round(t.cell, t.ref) or []
                lines.append(f"| {t.path} | {spread(ours)}{u} | {spread(self.r[t.ref])}{u} | "
                             f"{ratio_spread(ratios)} | ≤ {t.limit:g}× | "
                             f"{_verdict(statistics.median(ratios) <= t.limit)} |")
        for path, why in NOT_MEASURED:
            lines.append(f"| {path} | — | — | — | — | {why} |")
        extra = []
        mp = "multiprocessing.managers | import (ms)"
        if mp in self.r and "shmshare | import (ms)" in self.r:
            extra.append(f"For scale: `import multiprocessing.managers` took "
                         f"{spread(self.r[mp])} ms in the same rounds.")
        for peer in ("numpy | a[i]", "numpy | a[i] = v", "multiprocessing.Array | a[i]",
                     "multiprocessing.Array | a[i] = v"):
            if peer in self.r:
                lib, op = peer.split(" | ")
                extra.append(f"`{lib}` `{op}`: {spread(self.r[peer])} ns.")
        return "\n".join(lines) + ("\n\n" + " ".join(extra) if extra else "") + "\n"

    # -- the other objects' paths: no target, their floor or peer beside them ----------
    def others_md(self) -> str:
        lines = [f"| path | shmshare, median (min–max) of {self.rounds} rounds | floor or peer "
                 "| floor / peer, median (min–max) | ratio, per round: median (min–max) |",
                 "|---|---:|---|---:|---:|"]
        for path, cell, ref, ref_label in OTHERS:
            if cell not in self.r or ref not in self.r:
                why = self.errors.get(cell) or self.errors.get(ref) or "not measured"
                lines.append(f"| {path} | — | {ref_label} | — | {why} |")
                continue
            lines.append(f"| {path} | {spread(self.r[cell])} ns | {ref_label} | "
                         f"{spread(self.r[ref])} ns | "
                         f"{ratio_spread(self.per_round(cell, ref) or [])} |")
        return "\n".join(lines) + "\n"

    # -- the peers --------------------------------------------------------------------
    def peers_md(self) -> str:
        libs = [p for p in PEERS if f"{p} | set" in self.r]
        out = []
        for op in ("set", "get"):
            out += [f"### `d[k] = v` and `d[k]` of a small int, 1,000 keys: {op}", "",
                    f"| library | ns per {op}, median (min–max) | × floor | "
                    + " | ".join(f"vs {p}" for p in libs if p != "floor") + " |",
                    "|---|---:|---:|" + "---:|" * (len(libs) - 1)]
            for lib in libs:
                cell = f"{lib} | {op}"
                if cell not in self.r:
                    continue
                row = [PEER_NAMES[lib], spread(self.r[cell])]
                fl = self.per_round(cell, f"floor | {op}")
                row.append(ratio_spread(fl) if fl and lib != "floor" else "1")
                for other in libs:
                    if other == "floor":
                        continue
                    if other == lib:
                        row.append("—")
                        continue
                    rr = self.per_round(f"{other} | {op}", cell)
                    row.append(_faster(rr) if rr else "—")
                out.append("| " + " | ".join(row) + " |")
            out.append("")
        out.append("A cell \"vs X\" reads: this library is N× faster (or slower) than X: "
                   "the median and min–max of the per-round ratios of their times.")
        for lib, why in self.missing.items():
            out.append(f"\n{lib}: {why}.")
        return "\n".join(out) + "\n"

    def header(self, title: str) -> list[str]:
        lines = [f"# {title}", "",
                 f"Generated by `{self.command}` in {self.elapsed:,.0f} s: every cell ran "
                 f"once in each of {self.rounds} interleaved rounds, in one process tree; "
                 "each number is the median with the min–max of the rounds, and each ratio "
                 "is taken per round."
                 + (" Quick mode: shorter cells, rougher numbers." if self.quick else ""), "",
                 "The machine is shared (other jobs ran at the same time): the load average "
                 "below says how busy it was. Re-run the command for your own numbers.", "",
                 "The run fixes glibc malloc's thresholds (the malloc row below), for every "
                 "side alike, and each large cell drops each result before it makes the "
                 "next: otherwise a 10 MiB allocation either reuses pages or faults in "
                 "about 2,560 fresh ones, at random and on either side, and a cell times "
                 "the faults instead of its path.", "",
                 "| machine | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.machine.items()]
        lines += ["", "| library | version |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.versions.items()]
        return [*lines, ""]

    def benchmarks_page(self) -> str:
        return "\n".join([
            *self.header("Benchmark results"),
            "## Every path against its floor", "",
            "The floor of a dict path is a local dict holding `pickle.dumps(value)`: what "
            "storing serialized values costs with no sharing at all. Targets are those of "
            "the performance issue (#15). A get right after its key changed is measured "
            "as a loop of set then get minus the same loop of the set alone, for shmshare "
            "and its floor alike.", "",
            self.targets_md(),
            "## The other objects", "",
            "Paths of the other objects and of the dict's atomic read-modify-write, which "
            "the issue set no target for, against their floor (the same on local pickles) "
            "or their peer in `multiprocessing`.", "",
            self.others_md(),
            "## Compared with its peers", "",
            "See [benchmarks-compare.md](benchmarks-compare.md) (same run).", "",
            "## Other scripts", "",
            "`benchmarks/bench_manager.py` (each Manager typeid), "
            "`benchmarks/bench_array.py` (numpy fill and a Pool over a SharedArray) and "
            "`benchmarks/soak.py` (SIGKILL soak with a checker) are separate tools; their "
            "output is not published here.", ""])

    def compare_page(self, png: str | None) -> str:
        return "\n".join([
            *self.header("shmshare compared with its peers"),
            *([f"![ns per operation, log scale, bars: min–max of the rounds]({png})", ""]
              if png else []),
            self.peers_md(),
            "Notes: shmshare and UltraDict serve a `get` from a per-process cache while "
            "the key is unchanged (UltraDict returns the object it holds without "
            "unpickling, so it can beat the floor). shared-memory-dict pickles the whole "
            "dict on every set and has no cross-process lock. redis values are pickled "
            "and go over TCP loopback to a `redis-server` started for the run with "
            "persistence off. The Manager and redis rows move the most between rounds on "
            "a busy machine: read their spreads.", ""])

    def plot(self, path: Path) -> str | None:
        try:
            import matplotlib
        except ImportError:
            return None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        libs = [p for p in PEERS if f"{p} | set" in self.r]
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
        width = 0.8 / max(len(libs), 1)
        for j, lib in enumerate(libs):
            xs, ys, lo, hi = [], [], [], []
            for i, op in enumerate(("set", "get")):
                v = self.r.get(f"{lib} | {op}")
                if not v:
                    continue
                m = statistics.median(v)
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(m)
                lo.append(m - min(v))
                hi.append(max(v) - m)
            ax.bar(xs, ys, width=width, label=lib, yerr=[lo, hi], capsize=3)
        ax.set_yscale("log")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["set, small int", "get, small int"])
        ax.set_ylabel("ns per operation (log; lower is faster)")
        ax.set_title(f"median and min–max of {self.rounds} rounds — "
                     f"{self.machine.get('date', '')}", fontsize=10)
        ax.legend(fontsize=8, ncol=3)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return "img/" + path.name


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "missed"


def _faster(ratios: list[float]) -> str:
    """How much faster (their time / ours, per round), or, below 1, how much slower."""
    if statistics.median(ratios) >= 1:
        return ratio_spread(ratios, "× faster")
    return ratio_spread([1 / r for r in ratios], "× slower")

