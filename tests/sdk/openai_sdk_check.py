"""The official OpenAI Python SDK against llm-proxy: chat, stream, tools, errors.

Usage: python openai_sdk_check.py BASE_URL API_KEY
Exits non-zero with a message on the first failed check.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Models
ids = [m.id for m in client.models.list()]
check("mock-small" in ids and "mock-tools" in ids, f"models.list: {ids}")

# Chat
r = client.chat.completions.create(
    model="mock-small", messages=[{"role": "user", "content": "Explain RAG"}], temperature=0.5
)
check(r.choices[0].message.content.startswith("Mock reply"), f"chat content: {r}")
check(r.choices[0].finish_reason == "stop", "chat finish_reason")
check(r.usage.completion_tokens == 16, f"chat usage: {r.usage}")

# Stream, with usage
text, usage = "", None
stream = client.chat.completions.create(
    model="mock-small",
    messages=[{"role": "user", "content": "Explain RAG"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
check(text == r.choices[0].message.content, f"stream text {text!r} != chat text")
check(usage is not None and usage.total_tokens > 0, "stream usage chunk")

# Tools, non-streaming and streaming
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
msgs = [{"role": "user", "content": "Weather in Paris?"}]
r = client.chat.completions.create(model="mock-tools", messages=msgs, tools=tools)
call = r.choices[0].message.tool_calls[0]
check(r.choices[0].finish_reason == "tool_calls", "tool finish_reason")
check(call.function.name == "get_weather", "tool name")
check("city" in json.loads(call.function.arguments), "tool arguments are JSON with the required key")

args, name = "", None
for chunk in client.chat.completions.create(model="mock-tools", messages=msgs, tools=tools, stream=True):
    for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        name = tc.function.name or name
        args += tc.function.arguments or ""
check(name == "get_weather" and json.loads(args) == json.loads(call.function.arguments), "streamed tool call")

msgs += [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
]
r = client.chat.completions.create(model="mock-tools", messages=msgs, tools=tools)
check("sunny" in r.choices[0].message.content, "reply to the tool result")

# Errors map to the SDK's exception classes
try:
    client.chat.completions.create(model="mock-small", messages=[{"role": "user", "content": "x"}], temperature=9)
    check(False, "temperature 9 must be rejected")
except openai.BadRequestError as e:
    check(e.body.get("code") == "INVALID_REQUEST" and e.body.get("param") == "temperature", f"400 body: {e.body}")

bad = OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
try:
    bad.chat.completions.create(model="mock-small", messages=[{"role": "user", "content": "x"}])
    check(False, "a wrong key must be rejected")
except openai.AuthenticationError:
    checks += 1

print(f"openai SDK {openai.__version__}: {checks} checks passed")
