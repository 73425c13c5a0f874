"""The official Anthropic Python SDK against llm-proxy's /v1/messages: create, stream,
tool use and tool results, count_tokens, error classes.

Usage: python anthropic_sdk_check.py BASE_URL API_KEY
Exits non-zero with a message on the first failed check.
"""
import sys

import anthropic
from anthropic import Anthropic

base_url, api_key = sys.argv[1], sys.argv[2]
client = Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Create
m = client.messages.create(
    model="mock-small",
    max_tokens=64,
    system="Be brief.",
    messages=[{"role": "user", "content": "Explain RAG"}],
)
check(m.type == "message" and m.role == "assistant", f"message shape: {m}")
check(m.content and m.content[0].type == "text" and m.content[0].text, f"text: {m.content}")
check(m.stop_reason in ("end_turn", "max_tokens"), f"stop_reason: {m.stop_reason}")
check(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage: {m.usage}")

# Stream, through the SDK's own event accumulator
with client.messages.stream(
    model="mock-small",
    max_tokens=64,
    messages=[{"role": "user", "content": "Explain RAG"}],
) as stream:
    pieces = list(stream.text_stream)
    final = stream.get_final_message()
check(len(pieces) > 1, f"streamed in pieces: {pieces}")
check("".join(pieces) == final.content[0].text, "final message equals the streamed text")
check(final.usage.output_tokens > 0, f"stream usage: {final.usage}")

# Tools: the mock calls the first tool with schema-shaped input
tools = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
question = {"role": "user", "content": "Weather in Paris?"}
m = client.messages.create(model="mock-tools", max_tokens=128, tools=tools, messages=[question])
uses = [b for b in m.content if b.type == "tool_use"]
check(m.stop_reason == "tool_use", f"tool stop_reason: {m.stop_reason}")
check(uses and uses[0].name == "get_weather", f"tool_use block: {m.content}")
check(isinstance(uses[0].input, dict) and "city" in uses[0].input, f"tool input: {uses[0].input}")

# Streamed tool use: input_json_delta pieces accumulate to the same input
with client.messages.stream(
    model="mock-tools", max_tokens=128, tools=tools, messages=[question]
) as stream:
    final = stream.get_final_message()
streamed_uses = [b for b in final.content if b.type == "tool_use"]
check(streamed_uses and isinstance(streamed_uses[0].input, dict), f"streamed tool: {final.content}")
check("city" in streamed_uses[0].input, f"streamed tool input: {streamed_uses[0].input}")

# Tool result round trip: the mock answers in text once it has the result
m = client.messages.create(
    model="mock-tools",
    max_tokens=128,
    tools=tools,
    messages=[
        question,
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, sunny"}],
        },
    ],
)
check(m.content[0].type == "text" and m.stop_reason == "end_turn", f"after tool result: {m}")

# count_tokens
n = client.messages.count_tokens(model="mock-small", messages=[question])
check(n.input_tokens > 0, f"count_tokens: {n}")

# Errors map to the SDK's exception classes
try:
    Anthropic(base_url=base_url, api_key="wrong-key", max_retries=0).messages.create(
        model="mock-small", max_tokens=8, messages=[question]
    )
    check(False, "a wrong key must fail")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401, f"401: {e}")
try:
    client.messages.create(
        model="mock-small", max_tokens=8, messages=[question], extra_body={"temperature": 7}
    )
    check(False, "invalid parameters must fail")
except anthropic.BadRequestError as e:
    check(e.status_code == 400, f"400: {e}")

print(f"anthropic SDK {anthropic.__version__}: {checks} checks passed")
