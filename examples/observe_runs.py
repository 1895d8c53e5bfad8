"""Observe runs: a partial lifecycle subscriber and a tracing provider watch one run."""

from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig, StorageConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.protocols import LifecycleSubscriber, TracingProvider

subscriber_calls: list[str] = []
span_names: list[str] = []
ended_spans: list[tuple[str, str]] = []


class Recorder:
    """Implements only two hooks; every other hook is optional."""

    def before_generate(self, case, ctx):
        subscriber_calls.append(f"before_generate:{case.case_id}")

    def on_event(self, event):
        subscriber_calls.append(type(event).__name__)


class ListTracer:
    def start_span(self, name, attributes):
        span_names.append(name)
        return name

    def end_span(self, span, status):
        ended_spans.append((span, status))


subscriber: LifecycleSubscriber = Recorder()  # type: ignore[assignment]
tracer: TracingProvider = ListTracer()

experiment = Experiment(
    generation=GenerationConfig(
        generator="builtin/demo_generator",
        candidate_policy={"num_samples": 1},
        reducer="builtin/majority_vote",
    ),
    evaluation=EvaluationConfig(metrics=["builtin/exact_match"], parsers=["builtin/json_identity"]),
    storage=StorageConfig(store="memory"),
    runtime=RuntimeConfig(),
    datasets=[
        Dataset(
            dataset_id="sample",
            cases=[Case(case_id="case-1", input={"question": "2+2"}, expected_output="4")],
        )
    ],
    seeds=[7],
)
result = experiment.run(subscribers=[subscriber], tracing_provider=tracer)

print("status", result.status.value)
print("subscriber_calls", subscriber_calls)
print("span_names", span_names)
print("ended_spans", ended_spans)
