#!/usr/bin/env bash
# The predecessor's documented curl calls (its README, section API and the Ollama
# example), run against llm-proxy. Two changes, both needed to run them at all:
# - the host is "$BASE" (a test port) instead of http://localhost:8002;
# - the x-internal-auth header is in double quotes: in the single quotes printed there,
#   the shell would send the literal text ${LLM_PROXY__INTERNAL_API_KEY}.
# Each call's output follows a "=== n" line.
set -euo pipefail

echo "=== 1"
curl -X GET \
  "$BASE/v1/llm/models" \
  -H 'accept: application/json' \
  -H "x-internal-auth: ${LLM_PROXY__INTERNAL_API_KEY}"

echo
echo "=== 2"
curl -X POST "$BASE/v1/chat/completions" \
  -H 'accept: application/json' \
  -H 'Content-Type: application/json' \
  -H "x-internal-auth: ${LLM_PROXY__INTERNAL_API_KEY}" \
  -d '{
    "messages": [{"content": "Say hello!", "role": "user"}],
    "model": "gpt-4",
    "stream": true,
    "temperature": 1
  }'

echo
echo "=== 3"
curl -X POST "$BASE/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -H "x-internal-auth: ${LLM_PROXY__INTERNAL_API_KEY}" \
  -d '{
    "model": "llama2",
    "messages": [{"role": "user", "content": "Hello!"}]
  }'
echo
