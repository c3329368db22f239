"""What a model cannot do is refused, not silently ignored."""

from __future__ import annotations

import openai
import pytest
from lalo_testing.stack import Stack


def test_tools_on_a_model_without_tool_support_is_400(lalo_stack: Stack) -> None:
    client = openai.OpenAI(base_url=lalo_stack.base_url, api_key=lalo_stack.api_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=lalo_stack.model_id,
            messages=[{"role": "user", "content": "what is 2+2?"}],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "calculator",
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ],
            max_tokens=4,
        )
    body = caught.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "does not support tools" in body["error"]["message"]
    assert body["error"]["param"] == "tools"
