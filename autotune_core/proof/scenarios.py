"""The four proof scenarios, as scripted requests that are byte-identical for every arm.

Why scripted: a pair is only a pair if both arms are asked exactly the same thing. Multi-turn histories
(the conversation, the agent loop) therefore use fixed assistant turns and tool results instead of each
arm's own answers, so turn k has the same prompt in every arm. Warm-up items are the same shape with
other text: they load the model at the arm's own settings without priming the prefix cache with the
prompt about to be timed (the original proof's flaw).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..messages import Message, ToolCall
from ..tokens import estimate_message_tokens

SHORT_PROMPTS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "How many legs does a spider have?",
    "What is 7 times 8?",
    "Say hello in Spanish.",
    "What is the boiling point of water in Celsius?",
    "Name a planet in our solar system.",
    "What colour is the sky on a clear day?",
    "What is the opposite of cold?",
    "How many days are in a week?",
    "What do bees make?",
    "Name a fruit that is yellow.",
    "What is the largest ocean?",
    "Which animal says moo?",
    "What is 12 divided by 3?",
    "Name a musical instrument with strings.",
    "What season comes after winter?",
    "What is frozen water called?",
]
WARM_SHORT = ["Warm-up: reply with OK.", "Warm-up: name a number.", "Warm-up: say yes."]

SYSTEM = (
    "You are a careful, friendly assistant for a small hardware shop. Answer in one or two short sentences, "
    "use plain words, never invent prices, say so when you do not know, and suggest a safer tool when a "
    "customer describes a risky job. Stock covers hand tools, power tools, soldering gear, fasteners, "
    "adhesives, safety equipment and a small range of electronics parts. "
) * 5
TURNS = [
    ("Hi! Do you sell screwdrivers?", "Yes, we stock flat, Phillips, Torx and precision sets."),
    ("Which kind is best for small electronics?", "A precision set with Phillips #00 and Torx T5 covers most."),
    ("Do I need a magnetic tip?", "It helps with tiny screws; demagnetise it near sensitive parts."),
    ("What about a torque screwdriver?", "Useful for laptops and drones where overtightening cracks plastic."),
    ("Can you recommend a soldering iron?", "A temperature-controlled 60 W station with fine conical tips."),
    ("What temperature should I use for lead-free solder?", "Around 350 °C; raise it slightly for big joints."),
    ("Do I need a fume extractor?", "Yes for regular work indoors; flux fumes irritate the lungs."),
    ("What flux do you suggest?", "A no-clean rosin flux pen is easiest for repairs."),
    ("How do I clean the tip?", "Brass wool while hot, then re-tin it with a little fresh solder."),
    ("Thanks, anything else I should buy?", "Tweezers, a helping-hands clamp and desoldering braid."),
]
WARM_TURN = ("Warm-up: are you open today?", "Yes, until six.")

DOC_PARAGRAPH = (
    "The regional water board met on Tuesday to review the summer plan. Reservoir levels stand at "
    "seventy-two percent, below the ten-year average, and the board agreed to ask households to water "
    "gardens only in the evening. Two pumping stations will be serviced in July, and a new "
    "leak-detection contract starts in August. "
)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the project.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run the test suite.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
AGENT_TASK = "The test test_totals fails. Find the bug in invoice.py and propose a fix."
AGENT_STEPS = [
    ("run_tests", {}, "FAILED test_invoice.py::test_totals - assert 107.0 == 107.5\n1 failed, 14 passed in 0.21s"),
    (
        "read_file",
        {"path": "invoice.py"},
        "def total(items, tax):\n    subtotal = sum(i.price for i in items)\n    return round(subtotal * (1 + tax))\n",
    ),
    ("read_file", {"path": "test_invoice.py"}, "def test_totals():\n    assert total([Item(100.0)], 0.075) == 107.5\n"),
    ("run_tests", {}, "FAILED test_invoice.py::test_totals - assert 107.0 == 107.5\n1 failed, 14 passed in 0.20s"),
    ("read_file", {"path": "setup.cfg"}, "[tool:pytest]\naddopts = -q\n"),
    ("run_tests", {}, "FAILED test_invoice.py::test_totals - assert 107.0 == 107.5\n1 failed, 14 passed in 0.22s"),
]


@dataclass
class Step:
    """One timed request: the messages (and tools) sent, and a label for the per-step curve."""

    messages: list[Message]
    index: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Item:
    """A unit of pairing: one short chat, one conversation, one document, one agent run."""

    key: str
    steps: list[Step]


@dataclass
class Scenario:
    name: str
    title: str
    items: list[Item]
    warmup: Item
    max_tokens: int
    #: why it was skipped (then items is empty)
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def short_chats(n: int, max_tokens: int) -> Scenario:
    prompts = [SHORT_PROMPTS[i % len(SHORT_PROMPTS)] + ("" if i < len(SHORT_PROMPTS) else f" ({i})") for i in range(n)]
    items = [Item(f"short-{i}", [Step([Message(role="user", content=p)])]) for i, p in enumerate(prompts)]
    warm = Item("warm", [Step([Message(role="user", content=WARM_SHORT[0])])])
    return Scenario("short", "short chats", items, warm, max_tokens)


def conversation_steps(turns: int, tag: str = "") -> list[Step]:
    """Turn k: system + k scripted exchanges + the k-th question (identical in every arm)."""
    steps = []
    history = [Message(role="system", content=SYSTEM)]
    for k, (question, answer) in enumerate(TURNS[:turns]):
        asked = [*history, Message(role="user", content=question + tag)]
        steps.append(Step(list(asked), index=k + 1))
        history = [*asked, Message(role="assistant", content=answer)]
    return steps


def conversation(reps: int, turns: int, max_tokens: int) -> Scenario:
    # each repetition starts a fresh conversation; a tag keeps repetitions from sharing a cached history
    items = [Item(f"conversation-{r}", conversation_steps(turns, tag=f" [{r + 1}]" if r else "")) for r in range(reps)]
    warm = Item("warm", [Step([Message(role="system", content=SYSTEM), Message(role="user", content=WARM_TURN[0])])])
    return Scenario("conversation", f"{turns}-turn conversation, long system prompt", items, warm, max_tokens)


def document_text(tokens: int, variant: int) -> str:
    parts: list[str] = []
    i = 0
    while estimate_message_tokens([Message(role="user", content="\n\n".join(parts))]) < tokens:
        parts.append(f"Section {i + 1} (report {variant + 1}). {DOC_PARAGRAPH}")
        i += 1
    return "\n\n".join(parts)


def document(reps: int, default_ctx: int, max_tokens: int) -> Scenario:
    """Documents of ~1.4× the plain arm's default context (measured, not assumed)."""
    target = int(default_ctx * 1.4)
    question = "\n\nSummarise the notes above in one sentence, mentioning the first section's report number."
    items = [
        Item(f"document-{r}", [Step([Message(role="user", content=document_text(target, r) + question)])])
        for r in range(reps)
    ]
    warm = Item("warm", [Step([Message(role="user", content=document_text(target, 99) + question)])])
    scenario = Scenario(
        "document", f"document longer than the default context ({default_ctx})", items, warm, max_tokens
    )
    scenario.notes.append(
        f"each document is ~{target} estimated tokens; the plain arm runs at the backend's "
        f"default context of {default_ctx}"
    )
    return scenario


def agent_steps(steps: int, tag: str = "") -> list[Step]:
    """Step k: the task plus k scripted tool calls and results, tools offered every time."""
    out = []
    history = [
        Message(role="system", content="You are a coding agent. Use the tools; be brief."),
        Message(role="user", content=AGENT_TASK + tag),
    ]
    for k in range(steps):
        out.append(Step(list(history), index=k + 1, tools=TOOLS))
        name, args, result = AGENT_STEPS[k % len(AGENT_STEPS)]
        call = ToolCall(id=f"call_{k}", name=name, arguments=json.dumps(args), index=0)
        history = [
            *history,
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content=result, tool_call_id=f"call_{k}", name=name),
        ]
    return out


def agent(reps: int, steps: int, max_tokens: int) -> Scenario:
    items = [Item(f"agent-{r}", agent_steps(steps, tag=f" (run {r + 1})" if r else "")) for r in range(reps)]
    warm = Item("warm", [Step([Message(role="user", content="Warm-up: list two tools.")], tools=TOOLS)])
    return Scenario("agent", f"agent loop with tool calls ({steps} steps)", items, warm, max_tokens)
