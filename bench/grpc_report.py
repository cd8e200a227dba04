"""What ``python -m bench grpc`` shows: the terminal tables and the PNG plot of its report."""

from __future__ import annotations

import math

from bench.workload import Mix

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
CORES_NOTE = ("client processes, server processes and empty handlers share this machine's {cores} cores: "
              "every ceiling and figure is for this machine, not for a server with the cores to itself")
REMOTE_NOTE = ("the server at {target} was running before this command (its own rules, pixels and processes): "
               "its CPU and per-process shares are not seen from here, and every latency includes the network; "
               "{ceiling}")


def percentiles(values: list[float]) -> dict:
    """Latency percentiles in milliseconds, from every raw sample."""
    ordered = sorted(values)
    return {name: (ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else math.nan)
            for name, q in QUANTILES.items()}


def _shares(counts: list) -> str:
    total = sum(counts)
    if len(counts) <= 1:
        return "-"
    return "/".join(f"{c / total:.0%}" if total else "0" for c in counts)


def _n(value, width: int, spec: str = ",") -> str:
    """``value`` formatted to ``width``, or '-' for what was not measured or is not known here
    (None, NaN: a running server's rule count, CPU time, or a ceiling not asked for)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def note(report: dict) -> str:
    """Where the figures come from: this machine's shared cores, or a running server elsewhere."""
    setup = report["setup"]
    if setup.get("target") is None:
        return CORES_NOTE.format(cores=report["cores"])
    ceiling = (f"the ceiling is the empty handler at {setup['ceiling_target']}" if setup.get("ceiling_target")
               else "no ceiling was measured (--ceiling-target)")
    return REMOTE_NOTE.format(target=setup["target"], ceiling=ceiling)


def print_tables(report: dict) -> None:
    setup = report["setup"]
    print(f"batch {setup['batch']} events (throughput), {setup['latency_batch']} (fixed rates); "
          f"{setup['concurrency']} caller threads/connections per client process"
          + ("" if setup.get("server_workers") is None
             else f"; {setup['server_workers']} RPC threads per server process and empty handler")
          + f"; {setup['seconds']} s per measurement, {setup['repeat']} runs per throughput row"
          + ("" if setup.get("sync") is None else f"; sync={setup['sync']}")
          + ("" if setup.get("seed") is None or "workload" in setup
             else f"; seed-style workload, seed {setup['seed']}"))
    if "workload" in setup:  # a named one (bench.workload), as bench rules heads its tables
        print(f"{Mix.from_json(setup['workload']).describe()}; seed {setup['seed']}; {setup['rules_per_pixel']:,} "
              f"rules per pixel (one pixel below that)")
    print("note: " + note(report))
    for info in report["rules"]:
        if info["rules"] is None:
            print(f"{info['target']}: {info['distinct_events']:,} distinct events from {info['events_from']}, "
                  f"{info['matches_per_event']:.2f} matching conversions per event"
                  + (" (none matched: are these pixels registered on that server, with conversions?)"
                     if info["matches_per_event"] == 0 else ""))
            continue
        print(f"rules {info['rules']:,}: "
              + (f"{info['pixels']:,} pixels x {info['rules_per_pixel']:,}, " if "pixels" in info else "")
              + f"seeded in {info['seed_s']:.1f} s (generating and hashing the workload included), "
              f"{info.get('matches_per_event', math.nan):.2f} matching conversions per event")

    print()
    print(f"{'rules':>8} {'srv':>3} {'cl':>3} {'form':<13} {'target':<34} {'events/s':>11} {'of ceiling':>10} "
          f"{'range (events/s)':>23} {'p50 ms':>7} {'p99 ms':>7} {'srv us/ev':>9} {'srv cores':>9} {'cl us/ev':>8}"
          f"  calls per server process")
    for row in report["throughput"]:
        last = row["runs"][len(row["runs"]) // 2]
        shares = _shares([sum(r["per_server_calls"][i] for r in row["runs"]) for i in range(len(last["per_server_calls"]))])
        runs = row["events_per_s_runs"]
        print(f"{_n(row['rules'], 8)} {_n(row['server_processes'], 3, '')} {row['clients']:>3} {row['form']:<13} "
              f"{row['target']:<34} {row['events_per_s']:>11,.0f} {_n(row['fraction_of_ceiling'], 10, '.3f')} "
              f"{runs[0]:>11,.0f} ..{runs[-1]:>10,.0f} {_n(last['p50'], 7, '.2f')} {_n(last['p99'], 7, '.2f')} "
              f"{_n(row['server_cpu_us_per_event'], 9, '.2f')} {_n(row['server_busy_cores'], 9, '.2f')} "
              f"{row['client_cpu_us_per_event']:>8.2f}  {shares}")
    print("(srv us/ev, cl us/ev: CPU microseconds per event of the server and of the client processes, all their "
          "threads; srv cores: the server processes' CPU seconds per second; medians over the runs)")
    for row in report["throughput"]:
        failed = sum(run["errors"] for run in row["runs"])
        if failed:  # events/s counts answered calls only: a server refusing calls must not pass for a fast one
            print(f"WARNING: {failed:,} calls failed ({row['clients']} cl, {row['form']}, {row['target']}): "
                  f"events/s counts only the answered ones (the JSON's runs[].errors)")

    if report["latency"]:
        print()
        print(f"fixed rates, open loop (latency from the intended send time); 'ceiling' = the empty handler at the same rate; requests in the first --form")
        print(f"{'rules':>8} {'srv':>3} {'cl':>3} {'target ev/s':>11} {'achieved':>10} {'of max':>6} {'of ceil':>7} "
              f"{'p50':>7} {'p90':>7} {'p99':>7} {'p999':>7} {'ceil p50':>8} {'ceil p99':>8}  {'share':<8} unsent/errors")
        for row in report["latency"]:
            ceiling = row["ceiling"] or {}
            print(f"{_n(row['rules'], 8)} {_n(row['server_processes'], 3, '')} {row['clients']:>3} "
                  f"{row['target_events_per_s']:>11,.0f} {row['achieved_events_per_s']:>10,.0f} {row['of_max']:>6.2f} "
                  f"{_n(row['of_ceiling'], 7, '.3f')} {row['p50']:>7.2f} {row['p90']:>7.2f} {row['p99']:>7.2f} "
                  f"{row['p999']:>7.2f} {_n(ceiling.get('p50'), 8, '.2f')} {_n(ceiling.get('p99'), 8, '.2f')}  "
                  f"{_shares(row['per_server_calls']):<8} {row['unsent']}/{row['errors']}")
        print(f"(milliseconds; 'of max' = target / the ClassifyPixelEvents closed-loop throughput at "
              f"{setup['latency_batch']}-event requests, 'of ceil' = target / the empty handler's; those bases: "
              + "; ".join(f"{_combo(row)} {row['max_events_per_s']:,.0f} and "
                          f"{_n(row['ceiling_events_per_s'], 0, ',.0f')} events/s"
                          for row in report["latency"] if row["fraction"] == report["latency"][0]["fraction"]) + ")")

    print()
    for share in report["server_share"]:
        counts = share["events_classified"]
        print(f"rules {share['rules']:,}, {share['server_processes']} server process(es) (pids "
              f"{', '.join(map(str, share['pids']))}; each loaded {share['rules_loaded'][0]:,} rules, started in "
              f"{share['startup_s']:.1f} s): events classified per process (their /metrics) "
              f"{', '.join(f'{c:,.0f}' for c in counts)}"
              + ("" if len(counts) == 1 else "  -- every process received load" if all(counts)
                 else "  -- WARNING: a process received no load"))
    for reg in report["registration"]:
        print(f"registration -> visible to classification ({reg['count']} creates, {reg['rules']:,} rules, one server "
              f"process): p50 {reg['visible']['p50']:.2f} ms  p99 {reg['visible']['p99']:.2f} ms (the create call alone: "
              f"p50 {reg['call']['p50']:.2f} ms  p99 {reg['call']['p99']:.2f} ms)")


def _combo(row: dict) -> str:
    """A row's rules, server processes and clients, as a legend or a footnote names them."""
    if row["rules"] is None:
        return f"{row['clients']} cl"
    return f"{row['rules']:,} rules, {row['server_processes']} srv, {row['clients']} cl"


def plot(report: dict, path: str):
    """Left: events/s against rule count, a line per (server processes, clients, request form),
    the ceilings dashed. Right: p50 and p99 against offered (target) load, a line per (rules,
    processes, clients), in the first form (the fixed-rate runs'). Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = sorted({(r["rules"], r["server_processes"], r["clients"]) for r in report["latency"]})
    if lines:
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    else:  # no fixed rates measured: throughput only
        fig, left = plt.subplots(figsize=(7, 5))
    forms = list(dict.fromkeys(r["form"] for r in report["throughput"]))  # in the order measured
    # A running server's rule count is not known here: its throughput is drawn against the client processes.
    remote = report["setup"].get("target") is not None
    axis = "clients" if remote else "rules"
    combos = [None] if remote else sorted({(r["server_processes"], r["clients"]) for r in report["throughput"]})
    # A colour per (combo, form), so every form's line is told apart in the legend; the
    # service solid, its ceiling dashed in the same colour.
    for index, (combo, form) in enumerate((combo, form) for combo in combos for form in forms):
        color = f"C{index % 10}"
        for target, style, label in (("ClassifyPixelEvents", "-o", ""), ("empty handler (transport ceiling)", "--x",
                                                                          "ceiling")):
            rows = sorted((r for r in report["throughput"] if r["target"] == target and r["form"] == form
                           and (remote or (r["server_processes"], r["clients"]) == combo)), key=lambda r: r[axis])
            if not rows:  # a running server without --ceiling-target
                continue
            where = (label or report["setup"]["target"]) if remote else \
                f"{label + ', ' if label else ''}{combo[0]} server proc, {combo[1]} client proc"
            left.plot([r[axis] for r in rows], [r["events_per_s"] for r in rows], style, color=color,
                      label=f"{form}: {where}")
    if remote:
        from matplotlib.ticker import MaxNLocator

        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label(left, f"client processes (batch {report['setup']['batch']} events)", "events per second",
               "ClassifyPixelEvents throughput against load generators")
    else:
        left.set_xscale("log")
        _label(left, f"rules loaded (batch {report['setup']['batch']} events)", "events per second",
               "ClassifyPixelEvents throughput against rule count")

    if not lines:
        _save(fig, report, path)
        return fig
    for index, line in enumerate(lines):
        rows = sorted((r for r in report["latency"] if (r["rules"], r["server_processes"], r["clients"]) == line),
                      key=lambda r: r["target_events_per_s"])
        for name, style in (("p50", "-o"), ("p99", "--^")):
            right.plot([r["target_events_per_s"] for r in rows], [r[name] for r in rows], style, color=f"C{index}",
                       label=f"{name}, {_combo(rows[0])}, {rows[0]['form']}")
    _label(right, f"offered load (events/s, {report['setup']['latency_batch']}-event requests, open loop)",
           "latency from intended send (ms)", "latency against load")
    _save(fig, report, path)
    return fig


def _label(axes, xlabel: str, ylabel: str, title: str) -> None:
    """A panel's log y axis, labels, grid and legend."""
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)


def _save(fig, report: dict, path: str) -> None:
    fig.suptitle(note(report).replace(": every", ":\nevery").replace(": its", ":\nits"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
