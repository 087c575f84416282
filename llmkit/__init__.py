"""Language models for the agents: the one place that chooses and drives them.

Shared by the voice worker (its sessions' LLM) and agent_svc (text replies and call summaries), so a
profile answers with the same model whether the user talks or types:

- `models`: the model names each family accepts (LiveKit Inference names, the scripted responder).
- `choice`: cloud or offline, and which `llm.LLM` that means (LiveKit Inference, an OpenAI-compatible
  endpoint at LLM_BASE_URL, or the scripted offline responder), labelled as what it is.
- `settings`: the environment variables that configure those choices, for both services.
- `responder` / `responder_llm`: the scripted offline responder (no model at all).
- `text`: a reply or a summary as text, streamed from any `llm.LLM`, with stall bounds.
"""
