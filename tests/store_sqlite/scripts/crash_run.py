"""Run a few thousand demo cases against a SQLite store; the test kills this at random."""

from __future__ import annotations

import json
import os
import sys

from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig, StorageConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset


def experiment(path: str, cases: int) -> Experiment:
    """The same definition (so the same run_id) every time it is built."""
    return Experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator",
            candidate_policy={"num_samples": 2},
            reducer="builtin/majority_vote",
        ),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match", "builtin/f1"]),
        storage=StorageConfig(store="sqlite", parameters={"path": path}),
        runtime=RuntimeConfig(existing_run_policy="auto"),
        datasets=[sums(cases)],
    )


def sums(cases: int) -> Dataset:
    """``cases`` cases of ``"i+i"``, each expecting the sum."""
    return Dataset(
        dataset_id="sums",
        cases=[
            Case(case_id=f"case-{i}", input=f"{i}+{i}", expected_output=str(2 * i))
            for i in range(cases)
        ],
    )


def main(path: str, cases: int) -> None:
    exp = experiment(path, cases)
    print(json.dumps({"run_id": exp.compile().run_id}), flush=True)
    if os.environ.get("THEMIS_TEST_WRITER_PROCESS") == "1":
        # The store's writer process, ready before the run so that its batches go to it.
        from themis_store_sqlite import SqliteRunStore

        store = SqliteRunStore(path, writer_process=True)
        assert store._wait_writer_ready(60), "the writer process did not start"
        print(json.dumps({"writer_pid": store._writer_child.pid}), flush=True)  # type: ignore[union-attr]
        try:
            result = exp.run(store=store)
        finally:
            store.close()
    else:
        result = exp.run()
    print(json.dumps({"status": result.status.value, "cases": len(result.cases)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
