"""`python -m bench NAME [options]`: the benchmarks, one command.

    rules     custom-conversion rules: kernel, twin, reference, hand-written re (plain and careful), threads;
              named workloads (--workload mixed|urls|regex|numeric|parameters) and their knobs
    actions   action specs: compiled set, twin and reference on 100,000 ads
    grpc      the service under load: client and server processes, fixed rates, rule counts,
              each figure next to an empty handler (the transport's ceiling); its own seed-style
              workload, or --workload NAME (and the knobs) as rules takes them
    scaling   throughput against rule count, with --json and --plot
    service   a classification request inside the server without gRPC: decode, match, reply
              (the grpc bench's workload, or --workload NAME)
    builds    two builds of the rule kernel interleaved in one process: NEW/OLD, paired

`python -m bench NAME --help` lists each one's options.
"""

import importlib
import sys

COMMANDS = {"rules": "bench.rules", "actions": "bench.actions", "grpc": "bench.grpc_load", "scaling": "bench.scaling",
            "service": "bench.service_path", "builds": "bench.builds"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):  # asked for: the list, on stdout, and success
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "a command is needed"
        print(f"python -m bench: {problem} (choose from {', '.join(COMMANDS)})\n{__doc__}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
