"""``airlock plan``: will this model start on that hardware, with how much KV cache, and with which flags.

Example::

    from airlock.plan import PlanOptions, plan, read_facts
    p = plan(read_facts(Path("models/Llama-3.1-8B-Instruct")), PlanOptions(gpu="h100-80gb"))
    p.capacity.tokens, p.engine_args
"""

from airlock.plan.facts import ModelFacts, read_facts
from airlock.plan.planner import Plan, PlanOptions, plan

__all__ = ["ModelFacts", "Plan", "PlanOptions", "plan", "read_facts"]
