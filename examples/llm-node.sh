#!/usr/bin/env bash
# Run a viber node whose tasks are carried out by a coding agent on any OpenAI-compatible
# endpoint. Pick one provider block, then run this script on the worker machine.
#
#   ./examples/llm-node.sh --gateway http://GATEWAY:7391 --token vbr_enr_...   # first start
#   ./examples/llm-node.sh                                                   # later starts
#
# The key goes only into the node's environment (or set it as an environment secret on the
# gateway instead: viber env secret set ENV OPENAI_API_KEY). It is never put in a prompt,
# a log or a stream.
set -euo pipefail

# OpenAI
export OPENAI_BASE_URL="${OPENAI_BASE_URL:-https://api.openai.com/v1}"
export OPENAI_MODEL="${OPENAI_MODEL:-gpt-4o-mini}"
: "${OPENAI_API_KEY:?set OPENAI_API_KEY}"

# OpenRouter:      OPENAI_BASE_URL=https://openrouter.ai/api/v1    OPENAI_MODEL=anthropic/claude-sonnet-4
# Ollama (local):  OPENAI_BASE_URL=http://127.0.0.1:11434/v1      OPENAI_MODEL=qwen2.5-coder  OPENAI_API_KEY=ollama
# vLLM / llama.cpp server: OPENAI_BASE_URL=http://HOST:8000/v1    OPENAI_MODEL=<served model name>

exec viber node "$@"
