"""Capture traces and conversations: a live generator records its reasoning steps."""

from themis import Experiment, InMemoryRunStore
from themis.core.config import EvaluationConfig, GenerationConfig, StorageConfig
from themis.core.models import Case, Dataset, GenerationResult, Message, TraceStep


class TracedGenerator:
    component_id = "generator/traced_example"
    version = "1.0"

    def fingerprint(self) -> str:
        return "traced-example-v1"

    async def generate(self, case, ctx):
        return GenerationResult(
            candidate_id=ctx.candidate_id,
            final_output={"answer": "4"},
            trace=[
                TraceStep(step_name="reason", step_type="tool", input={"q": case.input}),
                TraceStep(step_name="answer", step_type="model", output={"answer": "4"}),
            ],
            conversation=[
                Message(role="user", content=case.input),
                Message(role="assistant", content="4"),
            ],
        )


experiment = Experiment(
    generation=GenerationConfig(generator=TracedGenerator()),
    evaluation=EvaluationConfig(),
    storage=StorageConfig(store="memory"),
    datasets=[Dataset(dataset_id="sample", cases=[Case(case_id="case-1", input="2+2")])],
)
store = InMemoryRunStore()
result = experiment.run(store=store)
trace_view = store.get_projection(result.run_id, "trace_view")

print("run_id", result.run_id)
print("status", result.status.value)
print("generation_traces", len(trace_view["generation_traces"]))
print("conversation_traces", len(trace_view["conversation_traces"]))
