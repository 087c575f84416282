"""agent_svc: LiveKit access (tokens, rooms, agent dispatch) and agent profiles, over gRPC."""
