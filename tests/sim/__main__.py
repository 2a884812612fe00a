"""``python3 -m tests.sim --nodes N --jobs J --seed S --faults all``

Runs the real decision core for N nodes and J jobs in one process with a virtual
clock and a seeded, faulty network, checks the invariants at every step, and
prints a summary that is the same for the same seed. When an invariant breaks,
it looks for the smallest run that still breaks it (fewer jobs, fewer nodes,
fewer kinds of fault, same seed) and prints that run's trace up to the break:
every step of the job concerned, and every crash and partition.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable

from .world import FAULT_KINDS, FAULT_SETS, World


def summary(world: World) -> str:
    stats = world.stats
    jobs = max(1, len(world.plans))
    placement = sorted(stats.placement_ms)

    def pct(fraction: float) -> int:
        if not placement:
            return 0
        return placement[min(len(placement) - 1, int(fraction * len(placement)))]

    completions = stats.completions
    share = sum(completions.values()) / max(1, len(world.nodes))
    busiest = max(completions.values(), default=0)
    outcomes = ", ".join(f"{state} {n}" for state, n in sorted(world.outcomes().items()))
    lines = [
        f"nodes {len(world.nodes)}  jobs {len(world.plans)}  faults "
        f"{','.join(sorted(world.faults)) or 'none'}  steps {stats.steps}  "
        f"virtual time {world.now / 1000:.1f}s",
        f"outcomes: {outcomes}",
        f"per job: bids {stats.bids / jobs:.2f}  point-to-point messages "
        f"{stats.messages / jobs:.2f}  announcements {stats.announcements / jobs:.2f} "
        f"(reaching {stats.announce_deliveries / jobs:.2f} nodes)",
        f"time to placement: p50 {pct(0.5)} ms  p99 {pct(0.99)} ms",
        f"load: busiest node ran {busiest} executions, {busiest / share if share else 0:.2f}× "
        "an equal share",
    ]
    if stats.verdicts or any(node.liar for node in world.nodes):
        verdicts = ", ".join(f"{state} {n}" for state, n in sorted(stats.verdicts.items()))
        lines.append(
            f"verification: verdicts {verdicts or 'none'}; liars "
            f"{sum(node.liar for node in world.nodes)} of {len(world.nodes)} nodes, placed "
            f"{stats.liar_placements} times, outvoted {stats.liars_outvoted} times, never "
            "accepted")
    if world.violation is None:
        lines.append("invariants: all held")
    else:
        lines.append(f"INVARIANT BROKEN {world.violation}")
    return "\n".join(lines)


def shrink(nodes: int, jobs: int, seed: int, faults: tuple[str, ...],
           make: Callable[..., World] = World) -> World:
    """The smallest failing run found by cutting jobs, then nodes, then fault kinds."""
    best = (nodes, jobs, faults)

    def fails(n: int, j: int, f: tuple[str, ...]) -> bool:
        return make(nodes=n, jobs=j, seed=seed, faults=f).run().violation is not None

    for j in sorted({1, 2, 4, 8, 16, 32, jobs // 2}):
        if j < best[1] and fails(best[0], j, best[2]):
            best = (best[0], j, best[2])
            break
    for n in sorted({1, 2, 3, 5, 10, 20, nodes // 2}):
        if 0 < n < best[0] and fails(n, best[1], best[2]):
            best = (n, best[1], best[2])
            break
    kinds = best[2]
    for kind in kinds:
        fewer = tuple(k for k in kinds if k != kind)
        if fails(best[0], best[1], fewer):
            kinds = fewer
    return make(nodes=best[0], jobs=best[1], seed=seed, faults=kinds, trace=True).run()


def trace_lines(world: World) -> list[str]:
    violation = world.violation
    assert violation is not None
    key = violation.job_id[:10]
    return [f"{at:>9} ms  {text}" for at, text in world.trace
            if at <= violation.at_ms and (not key or key in text or "crash" in text
                                          or "restart" in text or "partition" in text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.sim", description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unmeetable", type=float, default=0.04, metavar="SHARE",
                        help="share of jobs asking for more nodes than there are (they queue, "
                             "then fail; each asks every node) [default: 0.04]")
    parser.add_argument("--verified", type=float, default=0.0, metavar="SHARE",
                        help="share of jobs run --count 3 --verify [default: 0]")
    parser.add_argument("--liars", type=float, default=0.0, metavar="SHARE",
                        help="share of compute nodes that return a wrong result [default: 0]")
    parser.add_argument("--faults", default="all",
                        help=f"a set ({', '.join(FAULT_SETS)}) or kinds joined by commas")
    args = parser.parse_args(argv)
    if args.faults in FAULT_SETS:
        faults = FAULT_SETS[args.faults]
    else:
        faults = tuple(args.faults.split(","))
        unknown = sorted(set(faults) - set(FAULT_KINDS))
        if unknown:
            parser.error(f"unknown fault kind(s) {', '.join(unknown)}; "
                         f"known: {', '.join(FAULT_KINDS)}")
    if args.nodes < 1 or args.jobs < 0:
        parser.error("--nodes must be at least 1 and --jobs not negative")
    started = time.perf_counter()
    make = functools.partial(World, unmeetable_share=args.unmeetable,
                             verified_share=args.verified, liar_share=args.liars)
    world = make(nodes=args.nodes, jobs=args.jobs, seed=args.seed, faults=faults).run()
    print(summary(world))
    print(f"(took {time.perf_counter() - started:.1f}s of real time)", file=sys.stderr)
    if world.violation is None:
        return 0
    small = shrink(args.nodes, args.jobs, args.seed, faults, make=make)
    print(f"\nshortest failing run found: nodes {len(small.nodes)}, jobs {len(small.plans)}, "
          f"faults {','.join(sorted(small.faults)) or 'none'}, seed {args.seed}")
    print("\n".join(trace_lines(small)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
